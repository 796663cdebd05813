"""Precision check of ``epochal lint`` on a corpus of small, realistic training projects.

Each folder of tests/lint/corpus is one project (one to three files), linted on its own;
the findings of all of them must be exactly the ones listed here: every rule must fire
where the bug is (P6, P9-P12) and nowhere else. epochal's own code must lint clean.
"""

from __future__ import annotations

import os
from pathlib import Path

from epochal.lint import lint_paths

CORPUS = Path(__file__).parent / "corpus"
REPO = Path(__file__).parents[2]

# (project/file, line, rule): the exact findings expected from the corpus
EXPECTED = {
    ("cifar_aug/dataset.py", 18, "EPL001"),  # np.random.randint via self._random_crop
    ("cifar_aug/dataset.py", 23, "EPL001"),  # np.random.rand, DataLoader in train.py
    ("segmentation_rng/data.py", 17, "EPL001"),  # self.rng made in __init__
    ("iterable_stream/stream.py", 15, "EPL001"),  # IterableDataset.__iter__
    ("lambda_init_bad/train.py", 18, "EPL001"),  # worker_init_fn seeds random, not numpy
    ("ddp_no_set_epoch/train_ddp.py", 18, "EPL002"),
    ("device_bug/train.py", 12, "EPL003"),
    ("device_bug/train.py", 13, "EPL003"),
    ("param_move/setup.py", 9, "EPL003"),  # param.to(device)
    ("param_move/setup.py", 17, "EPL003"),  # buffer = torch.zeros(...); buffer.to(device)
    ("hf_style/finetune.py", 20, "EPL004"),  # append(outputs.loss)
    ("loss_history/train.py", 16, "EPL004"),
    ("multi_task/train.py", 17, "EPL004"),
    ("no_zero_grad/train.py", 13, "EPL005"),
    ("zero_outside/train.py", 17, "EPL005"),  # zero_grad once per epoch, step per batch
    ("resume_prefix/load.py", 11, "EPL006"),  # key.replace("module.", "")
    ("resume_prefix_add/load.py", 8, "EPL006"),  # "module." + k
    ("ckpt_inplace/train.py", 12, "EPL007"),
    ("ckpt_helper/utils.py", 8, "EPL007"),  # save_checkpoint() called by train.py's loop
    ("multi_task/train.py", 20, "EPL007"),
    ("ddp_parser/main.py", 29, "EPL008"),  # args.parser = parser; mp.spawn(..., args)
    ("ddp_config_class/launch.py", 12, "EPL008"),  # TrainConfig in config.py keeps a parser
}


def _projects() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.is_dir())


def test_corpus_is_big_enough_and_mixed() -> None:
    files = list(CORPUS.rglob("*.py"))
    assert len(files) >= 30
    buggy = {path.split("/")[0] for path, _, _ in EXPECTED}
    clean = {p.name for p in _projects()} - buggy
    assert len(buggy) >= 15 and len(clean) >= 15, (buggy, clean)


def test_corpus_findings_are_exactly_the_expected_ones() -> None:
    """P6, P9, P10, P11, P12: each bug found where it is, nothing found in correct code."""
    found = set()
    suppressed = 0
    for project in _projects():
        report = lint_paths([project], jobs=1)
        assert report.skipped == []
        suppressed += report.suppressed
        for f in report.findings:
            found.add((Path(f.path).relative_to(CORPUS).as_posix(), f.line, f.rule))
    missed = EXPECTED - found
    extra = found - EXPECTED
    assert not missed and not extra, f"missed={sorted(missed)} unexpected={sorted(extra)}"
    assert suppressed == 2  # the noqa_project folder silences one rule, then all rules


def test_every_rule_fires_in_the_corpus() -> None:
    assert {rule for _, _, rule in EXPECTED} == {f"EPL00{i}" for i in range(1, 9)}


def test_whole_corpus_as_one_project_only_merges_cross_file_evidence() -> None:
    """Linted as one tree, the corpus's set_epoch calls elsewhere hide EPL002, nothing else."""
    report = lint_paths([CORPUS], jobs=1)
    found = {(Path(f.path).relative_to(CORPUS).as_posix(), f.line, f.rule) for f in report.findings}
    without_epl002 = {e for e in EXPECTED if e[2] != "EPL002"}
    assert without_epl002 <= found
    # a loader without worker_init_fn somewhere in the tree makes every numpy-random
    # dataset of the tree suspect: the extra findings may only be EPL001
    assert {e[2] for e in found - EXPECTED} <= {"EPL001"}


def test_epochal_own_source_and_examples_are_clean() -> None:
    paths = [REPO / "src"] + [REPO / d for d in ("examples", "benchmarks") if (REPO / d).is_dir()]
    report = lint_paths(paths)
    assert report.files_checked > 10
    assert report.findings == [], [f"{f.path}:{f.line} {f.rule}" for f in report.findings]
    assert report.skipped == []
    assert os.fspath(paths[0]).endswith("src")
