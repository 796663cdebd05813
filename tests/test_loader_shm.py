"""Worker batches travel through named shared memory, which a SIGKILL does not leak.

The Loader's workers send batches with torch's "file_system" sharing strategy (segments
in /dev/shm named ``torch_<worker pid>_...``): cheaper per tensor than passing file
descriptors. Segments held by a process that dies must still be removed.
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

    source = epochal.from_arrays(x=np.arange(4096 * 8, dtype=np.float32).reshape(4096, 8))
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
