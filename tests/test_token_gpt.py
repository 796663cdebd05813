"""A 2-layer GPT on token windows learns below the unigram entropy and resumes bitwise
after a SIGKILL (tests/_token_gpt.py is the training script)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from _token_gpt import corpus, unigram_entropy

SCRIPT = str(Path(__file__).with_name("_token_gpt.py"))
STEPS, KILL_AT = 200, 110  # the kill lands between the checkpoints of steps 100 and 120


def _losses(run: Path) -> dict[int, float]:
    """Last logged loss of every step (steps redone after the resume are logged twice)."""
    out: dict[int, float] = {}
    for line in (run / "losses").read_text().splitlines():
        step, value = line.split()
        out[int(step)] = float.fromhex(value)
    return out


def test_tiny_gpt_learns_and_resumes_bitwise_after_sigkill(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    # the uninterrupted run and the one to kill run side by side (one thread each)
    reference_run = subprocess.Popen([sys.executable, SCRIPT, str(whole), str(STEPS)])
    proc = subprocess.Popen([sys.executable, SCRIPT, str(killed), str(STEPS)])
    try:
        deadline = time.monotonic() + 900
        log = killed / "losses"
        # whole lines only: the run may be halfway through writing the next one
        while (log.read_text().count("\n") if log.exists() else 0) < KILL_AT:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        try:
            reference_run.wait(timeout=600)
        finally:
            reference_run.kill()  # no-op once it has exited; never leave it running
    assert reference_run.returncode == 0
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "final.pt").exists()
    subprocess.run([sys.executable, SCRIPT, str(killed), str(STEPS)], check=True, timeout=300)

    reference, resumed = _losses(whole), _losses(killed)
    assert sorted(reference) == sorted(resumed) == list(range(1, STEPS + 1))
    assert resumed == reference  # every step's loss, bit for bit (float.hex round trip)
    a = torch.load(whole / "final.pt", weights_only=True)
    b = torch.load(killed / "final.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    entropy = unigram_entropy(corpus())
    final = sum(reference[s] for s in range(STEPS - 29, STEPS + 1)) / 30
    assert reference[1] > entropy  # it starts above (about log 256)
    assert final < entropy - 0.5, (final, entropy)  # it learned context, not only frequencies
