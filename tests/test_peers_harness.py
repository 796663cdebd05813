"""The peers benchmark harness (benchmarks/peers/) on a tiny dataset, so that it cannot rot.

Runs with whichever peer libraries the current environment has (plain PyTorch and epochal
always): every measurement of every available system, in real subprocesses, and the
Markdown report. The full comparison runs in the peers' own venv (run.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

HARNESS = Path(__file__).resolve().parent.parent / "benchmarks" / "peers"
sys.path.insert(0, str(HARNESS))

import run as peers  # noqa: E402
from _measure import shuffle_quality  # noqa: E402
from _systems import SYSTEMS, available  # noqa: E402

N = 2_000


def test_shuffle_quality_tells_a_global_shuffle_from_sequential_and_buffered_orders():
    """P1: the metric separates a global shuffle (~1/3, ~0.10) from a shuffle buffer."""
    n = 100_000
    ordered = shuffle_quality(np.arange(n), n)
    assert ordered["mean_displacement"] == 0 and ordered["head_from_first_10pct"] == 1.0
    uniform = shuffle_quality(np.random.default_rng(0).permutation(n), n)
    assert abs(uniform["mean_displacement"] - 1 / 3) < 0.01
    assert abs(uniform["head_from_first_10pct"] - 0.10) < 0.03
    rng, buffer, out = np.random.default_rng(0), list(range(1000)), []
    for i in range(1000, n):  # a 1,000-record shuffle buffer
        out.append(buffer.pop(int(rng.integers(len(buffer)))))
        buffer.append(i)
    buffered = shuffle_quality(np.array(out + buffer), n)
    assert buffered["mean_displacement"] < 0.01 and buffered["head_from_first_10pct"] == 1.0


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("peers")
    names = tuple(s.name for s in SYSTEMS if available(s)[0] and s.name != "epochal-store")
    assert {"torch", "epochal"} <= set(names)
    cfg = peers.Config(
        records=N, systems=names, kinds=("fixed",), repeats=1, epoch_seconds=5,
        resume_seconds=30, workers=(0,), configs=("default",), workdir=tmp / "work", out=tmp / "out",
    )  # fmt: skip
    res = peers.run(cfg, sys.executable)
    res["report"] = peers.write_report(res, cfg.out)
    return res


def test_epochal_resumes_exactly_with_other_workers_and_world_size(results: dict):
    """P4/P5: the harness checks the resumed sequence against the uninterrupted one."""
    fixed = results["systems"]["epochal"]["fixed"]
    for variant in ("same", "workers", "world"):
        res = fixed[f"resume/{variant}"]
        assert res["equal"], (variant, res)
        assert res["consumed"] == (int(N * 0.75) // 256) * 256
        assert res["resumed_samples"] == N - res["consumed"]
    assert results["systems"]["torch"]["fixed"]["resume/same"] == {"supported": False}


def test_epochs_are_complete_global_shuffles_and_ranks_read_a_quarter(results: dict):
    """P1/P3: every record once per epoch, a global shuffle, each of 4 ranks reads n/4."""
    for name in ("torch", "epochal"):
        fixed = results["systems"][name]["fixed"]
        epoch = fixed["epoch/default/0"]
        assert epoch["complete_once"] and epoch["rates"][0] > 0, epoch
        assert 0.28 < epoch["quality"]["mean_displacement"] < 0.39
        ranks = fixed["ranks"]
        assert ranks["union"] == N
        assert [r["touched"] for r in ranks["per_rank"]] == [N // 4] * 4


def test_report_lists_every_system_and_the_baseline_ratio(results: dict):
    text = Path(results["report"]).read_text()
    for name in results["systems"]:
        assert f"| {name} |" in text
    assert "= 1.00x" in text  # the baseline's own ratio
    base = results["systems"]["numpy"]["fixed"]["epoch/default/0"]["rates"][0]
    assert f"{base:,.0f}" in text
