"""Loads a checkpoint saved from a DataParallel model into a bare one."""
from collections import OrderedDict

import torch


def load_for_inference(model, path):
    checkpoint = torch.load(path, map_location="cpu")
    state = OrderedDict()
    for key, value in checkpoint["state_dict"].items():
        state[key.replace("module.", "")] = value
    model.load_state_dict(state)
    return model


def load_exact(model, path):
    checkpoint = torch.load(path, map_location="cpu")
    state = {k.removeprefix("module."): v for k, v in checkpoint["model"].items()}
    model.load_state_dict(state)
    return model
