"""Side-by-side benchmark of epochal against the peer libraries, in one command.

    python benchmarks/peers/run.py --records 200000

creates (when missing) a virtual environment for the peers in benchmarks/peers/.venv:
torch==2.13.0 (the CPU build) first, then epochal (``pip install -e``), then the pinned
peers (requirements.txt; requirements-nodeps.txt with --no-deps), and re-runs itself
there. It writes both datasets once, converts them into each system's format, runs every
measurement for each system in its own subprocess (time-bounded), and writes
docs/benchmarks/peers.md, results.json and PNG plots. ``--python`` runs in another
environment instead (the test uses the current one, with whichever peers it has).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from _data import KINDS, make_raw  # noqa: E402
from _report import write_report  # noqa: E402
from _systems import SYSTEMS, available, build_nothing, versions  # noqa: E402

__all__ = ["Config", "main", "run", "write_report"]

VENV = HERE / ".venv"


@dataclasses.dataclass(kw_only=True)
class Config:
    """Options of the peers benchmark."""

    records: int = 200_000
    """Records in each dataset (the issue's figure is 200,000)."""
    systems: tuple[str, ...] = ()
    """Only these systems (default: all; the numpy baseline always runs)."""
    kinds: tuple[str, ...] = KINDS
    """Datasets: fixed (3,072 B + label) and/or varlen (1-8 KiB)."""
    repeats: int = 3
    """Timed repeats per measurement (the report shows the median and min-max)."""
    epoch_seconds: float = 20.0
    """Time limit of one timed epoch: a slower system is timed over the part it reads."""
    resume_seconds: float = 300.0
    """Time limit of a resume measurement (it reads one whole epoch first)."""
    workers: tuple[int, ...] = (0, 2)
    """DataLoader worker counts to time."""
    configs: tuple[str, ...] = ("default", "tuned")
    """Configurations of each system to time (see the report's Settings table)."""
    workdir: Path = Path.home() / ".cache" / "epochal-peers"
    """Where the datasets and every system's copy are written (kept between runs)."""
    out: Path = REPO / "docs" / "benchmarks"
    """Where the report, results.json and plots go."""
    python: str = ""
    """Run in this interpreter as it is (default: create/use benchmarks/peers/.venv)."""
    skip: tuple[str, ...] = ()
    """Measurements to skip (build, epoch, resume, ranks)."""
    report_only: bool = False
    """Only rewrite the report (and plots) from the results.json already in ``out``."""


def _pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "-q", *args], check=True)


def ensure_venv() -> Path:
    """The peers' interpreter, creating the environment when it is missing."""
    python = VENV / "bin" / "python"
    marker = VENV / ".complete"
    reqs = (HERE / "requirements.txt").read_text() + (HERE / "requirements-nodeps.txt").read_text()
    if marker.exists() and marker.read_text() == reqs:
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    _pip(python, "torch==2.13.0")  # first: the CPU build from local disk
    _pip(python, "-e", str(REPO))
    _pip(python, "-r", str(HERE / "requirements.txt"))
    _pip(python, "--no-deps", "-r", str(HERE / "requirements-nodeps.txt"))
    marker.write_text(reqs)
    return python


def _measure(python: str, spec: dict[str, Any] | list[dict[str, Any]], timeout: float) -> Any:
    """Run ``_measure.py`` on ``spec`` (one or a list) in a fresh process; its result(s)."""
    first = spec if isinstance(spec, dict) else spec[0]
    out = Path(first["data"]).parent / f".result-{os.getpid()}.json"
    out.unlink(missing_ok=True)
    cmd = [python, str(HERE / "_measure.py"), json.dumps(spec), str(out)]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(HERE)])}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0 or not out.exists():
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {"error": lines[-1] if lines else f"exit code {proc.returncode}"}
    return json.loads(out.read_text())


def _machine() -> dict[str, Any]:
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cores": os.cpu_count(), "ram_gib": round(mem / 2**30, 1), "cpu": cpu,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M %Z")}  # fmt: skip


def run(cfg: Config, python: str, *, report: bool = False) -> dict[str, Any]:
    """Every measurement for every selected system; returns the results document."""
    chosen = [s for s in SYSTEMS if not cfg.systems or s.name in cfg.systems or s.name == "numpy"]
    results: dict[str, Any] = {"config": {k: str(v) for k, v in dataclasses.asdict(cfg).items()},
                               "machine": _machine(), "systems": {}}  # fmt: skip
    for kind in cfg.kinds:
        raw_root = cfg.workdir / f"{kind}-{cfg.records}" / "raw"
        make_raw(raw_root, kind, cfg.records)
        for system in chosen:
            entry = results["systems"].setdefault(system.name, {
                "title": system.title, "versions": versions(system), "settings": system.settings,
                "resume": system.resume, "elastic": list(system.elastic)})  # fmt: skip
            ok, why = available(system)
            if not ok:
                entry["unavailable"] = why
                continue
            data = raw_root.parent / system.store_name
            base = {"system": system.name, "kind": kind, "data": str(data), "raw": str(raw_root),
                    "seed": 0, "config": "default", "workers": 0, "repeats": cfg.repeats,
                    "time_limit": cfg.epoch_seconds}  # fmt: skip
            res: dict[str, Any] = entry.setdefault(kind, {})
            t0 = time.perf_counter()
            if "build" not in cfg.skip:
                if system.store:  # reads another system's copy
                    res["build"] = {"shared_with": system.store}
                elif system.build is build_nothing:  # reads the raw memmap itself
                    res["build"] = {"seconds": 0.0, "bytes": 0, "raw_bytes": 1}
                else:
                    res["build"] = _measure(python, base | {"measure": "build"}, 3600)
                    if "error" in res["build"]:
                        entry[f"{kind}_error"] = res["build"]["error"]
                        print(f"  {kind:6} {system.name:14} build failed: {res['build']['error']}")
                        continue
            if "epoch" not in cfg.skip:
                for config in [c for c in system.settings if c in cfg.configs]:
                    for workers in (0,) if system.name == "numpy" else cfg.workers:
                        spec = base | {"measure": "epoch", "config": config, "workers": workers}
                        limit = cfg.repeats * (cfg.epoch_seconds + 120) + 60
                        res[f"epoch/{config}/{workers}"] = _measure(python, spec, limit)
            later: dict[str, dict[str, Any]] = {}  # resume variants and ranks: one process
            if "resume" not in cfg.skip and system.resume.startswith("none"):
                res["resume/same"] = res["resume/workers"] = {"supported": False}
            elif "resume" not in cfg.skip and system.name != "numpy":
                variants = {"same": {}, "workers": {"resume_workers": 2}}
                if "world" in system.elastic and system.name.startswith("epochal"):
                    variants["world"] = {"resume_world": 2}
                for label, extra in variants.items():
                    later[f"resume/{label}"] = (
                        base | {"measure": "resume", "time_limit": cfg.resume_seconds} | extra
                    )
            if "ranks" not in cfg.skip and system.name != "numpy":
                later["ranks"] = base | {"measure": "ranks", "time_limit": cfg.resume_seconds}
            if later:
                got = _measure(python, list(later.values()), cfg.resume_seconds * (len(later) + 1))
                if isinstance(got, dict):  # the whole process failed or timed out
                    got = [got] * len(later)
                res.update(zip(later, got))
            if report:  # after every system: a cut-short run still leaves a report
                write_report(results, cfg.out)
            print(f"  {kind:6} {system.name:14} done in {time.perf_counter() - t0:6.1f} s",
                  flush=True)  # fmt: skip
    return results


def main(argv: list[str]) -> int:
    import tyro

    cfg = tyro.cli(Config, args=argv, prog="benchmarks/peers/run.py",
                   description=__doc__.splitlines()[0])  # fmt: skip
    python = cfg.python or str(ensure_venv())
    if not cfg.python and Path(sys.prefix).resolve() != VENV.resolve():
        # the report's versions must be the peers venv's: re-run there
        return subprocess.run([python, __file__, *argv, "--python", python]).returncode
    if cfg.report_only:
        results = json.loads((cfg.out / "results.json").read_text())
        print(f"report: {write_report(results, cfg.out)}")
        return 0
    print(f"peers benchmark: {cfg.records:,} records, systems: {cfg.systems or 'all'}")
    results = run(cfg, python, report=True)
    path = write_report(results, cfg.out)
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
