"""Large tensors of worker batches travel through named shared memory, which a SIGKILL
does not leak; small ones by value.

The Loader's workers send large tensors with torch's "file_system" sharing strategy
(segments in /dev/shm named ``torch_<worker pid>_...``): cheaper per tensor than passing
file descriptors. Segments held by a process that dies must still be removed. Tensors of
at most 512 KiB are copied into the message instead, which costs both processes less than
a segment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SHM = Path("/dev/shm")

SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import epochal

    def keep(record, rng):
        return record

    # 64 rows of 4096 float32 = 1 MiB a batch: above the size that travels by value
    source = epochal.from_arrays(x=np.zeros((1024, 4096), dtype=np.float32))
    loader = epochal.Loader(source, 64, num_workers=2, transform=keep)
    held = []
    for i, batch in enumerate(loader):
        held.append(batch)
        if i == 5:
            pids = [w.pid for w in loader._dataloader._iterator._workers]
            print(" ".join(map(str, pids)), flush=True)
            time.sleep(120)
    """
)


def _segments(pids: list[int]) -> list[str]:
    return [
        p.name for p in SHM.iterdir() if any(p.name.startswith(f"torch_{pid}_") for pid in pids)
    ]


@pytest.mark.slow
@pytest.mark.skipif(not SHM.is_dir(), reason="needs /dev/shm (Linux)")
def test_worker_batches_use_named_shared_memory_that_a_sigkill_does_not_leak(tmp_path):
    script = tmp_path / "hold.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        line = proc.stdout.readline()
        assert line, "the loader script ended before holding its batches"
        pids = [int(p) for p in line.split()]
        # the held batches (and the prefetched ones) live in segments named by the workers
        assert len(_segments(pids)) >= 6
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 60
    while _segments(pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _segments(pids) == []


def test_small_tensors_of_a_worker_batch_travel_by_value_and_large_ones_in_shared_memory():
    import pickle
    from multiprocessing.reduction import ForkingPickler

    import torch
    import torch.multiprocessing  # registers the reductions that share tensors

    from epochal._fetch import _BY_VALUE_BYTES, _Array, _to_arrays, send_small_by_value

    image = torch.arange(32 * 3 * 64 * 64, dtype=torch.int64).to(torch.uint8).view(32, 3, 64, 64)
    batch = {
        "image": image[:, :, ::2],  # a strided view: its values, not its storage, travel
        "label": torch.arange(32),
        "half": torch.ones(4, dtype=torch.bfloat16),  # numpy has no bfloat16
        "big": torch.zeros(_BY_VALUE_BYTES // 4 + 1, dtype=torch.float32),
        "nested": [(torch.tensor([1.5]), "text")],
        "names": ["a", "b"],
    }
    message = ForkingPickler.dumps(send_small_by_value(batch))
    assert len(message) > image[:, :, ::2].numel()  # the image's bytes are in the message
    back = pickle.loads(message)
    assert list(back) == list(batch)
    for name in ("image", "label", "half", "big"):
        assert type(back[name]) is torch.Tensor and back[name].dtype == batch[name].dtype
        assert torch.equal(back[name], batch[name])
    assert back["image"].is_contiguous() and back["image"].numpy().flags.writeable
    assert torch.equal(back["nested"][0][0], torch.tensor([1.5])) and back["nested"][0][1] == "text"
    assert back["names"] == ["a", "b"]
    marked = _to_arrays(batch)
    assert marked["big"] is batch["big"] and marked["half"] is batch["half"]
    assert isinstance(marked["label"], _Array) and isinstance(marked["image"], _Array)
