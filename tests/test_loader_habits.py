"""DataLoader habits: every DataLoader argument is accepted or refused with what to use
instead, a pass that loses a worker process does not break the next one, and transform
errors name the record."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

import epochal
from epochal import Loader

_MARK = -1  # set in each worker by _mark_worker


def _source(n: int = 24):
    return epochal.from_arrays(y=np.arange(n, dtype=np.int64))


def _mark_worker(worker_id: int) -> None:
    global _MARK
    _MARK = 100 + worker_id


def _with_mark(record, rng):
    return {"y": record["y"], "mark": np.int64(_MARK)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"generator": torch.Generator()}, r"generator=.* seed=<int>"),
        (
            {"batch_sampler": torch.utils.data.BatchSampler(range(4), 2, False)},
            r"batch_sampler=BatchSampler .* batch_size and drop_last",
        ),
        ({"sampler": torch.utils.data.RandomSampler(range(24))}, "use shuffle=True"),
        ({"sampler": torch.utils.data.SequentialSampler(range(24))}, "use shuffle=False"),
        (
            {"sampler": torch.utils.data.SubsetRandomSampler([1, 2])},
            r"epochal.subset\(source, indices\)",
        ),
        (
            {"sampler": torch.utils.data.WeightedRandomSampler([1.0] * 24, 24)},
            "epochal.WeightedSampler",
        ),
        (
            {"sampler": torch.utils.data.DistributedSampler(range(24), num_replicas=2, rank=0)},
            "epochal shards by rank itself",
        ),
        ({"sampler": object()}, "not an epochal sampler"),
        ({"in_order": False}, "in_order=False is not supported"),
        ({"pin_memory_device": "cuda"}, "pin_memory_device='cuda'"),
        ({"worker_init_fn": 3}, "worker_init_fn must be callable"),
    ],
)
def test_dataloader_arguments_epochal_replaces_are_refused_with_the_replacement(kwargs, message):
    with pytest.raises(epochal.Error, match=message):
        Loader(_source(), 4, **kwargs)


def test_worker_init_fn_runs_in_every_worker():
    loader = Loader(_source(), 4, num_workers=2, transform=_with_mark, worker_init_fn=_mark_worker)
    marks = {int(m) for batch in loader for m in batch["mark"]}
    assert marks == {100, 101}


def test_persistent_workers_default_is_documented():
    assert Loader.__init__.__kwdefaults__["persistent_workers"] is True
    assert "unlike DataLoader" in Loader.__doc__


class _KillOnce:
    """A transform that SIGKILLs its worker process at one record, once (a flag file)."""

    def __init__(self, flag: str, index: int) -> None:
        self.flag, self.index = flag, index

    def __call__(self, record, rng):
        if int(record["y"]) == self.index and os.path.exists(self.flag):
            os.remove(self.flag)
            os.kill(os.getpid(), signal.SIGKILL)
        return record


@pytest.mark.slow
def test_a_loader_recovers_after_a_worker_process_dies(tmp_path):
    """Issue 12 finding 8: a SIGKILLed worker used to break every later pass of a
    persistent-worker Loader; now the next iter() starts new workers and continues from
    the batches actually delivered."""
    flag = tmp_path / "kill"
    flag.touch()
    make = lambda: Loader(  # noqa: E731
        _source(), 4, seed=3, num_workers=2, transform=_KillOnce(str(flag), 13)
    )
    loader = make()
    got = []
    with pytest.raises(RuntimeError, match="DataLoader worker"):
        for batch in loader:
            got += batch["y"].tolist()
    assert not flag.exists()
    for batch in loader:  # a fresh pool: the rest of the epoch, nothing lost or repeated
        got += batch["y"].tolist()
    reference = [int(v) for b in make() for v in b["y"]]
    assert got == reference and loader.epoch == 1
    assert sorted(int(v) for b in loader for v in b["y"]) == list(range(24))


def _fail_at_7(record, rng):
    if int(record["y"]) == 7:
        raise ValueError("bad pixel")
    return record


@pytest.mark.parametrize("num_workers", [0, 2])
def test_transform_errors_name_the_record_and_epoch(num_workers):
    loader = Loader(_source(), 4, shuffle=False, num_workers=num_workers, transform=_fail_at_7)
    loader.set_epoch(2)
    with pytest.raises(ValueError, match="bad pixel") as caught:
        list(loader)
    text = str(caught.value) + "".join(getattr(caught.value, "__notes__", []))
    assert "record 7 of epoch 2" in text
