"""A config object that builds and keeps its own parser."""
import argparse


class TrainConfig:
    def __init__(self, argv=None):
        self.parser = argparse.ArgumentParser()
        self.parser.add_argument("--lr", type=float, default=0.1)
        self.parser.add_argument("--world-size", type=int, default=2)
        self.args = self.parser.parse_args(argv)

    @property
    def lr(self):
        return self.args.lr
