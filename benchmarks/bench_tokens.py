"""Token-window benchmark (issue 17): epochal.tokens through the Loader vs raw memmap slicing.

Usage: python benchmarks/bench_tokens.py [--tokens 50000000] [--batches 100] [--repeats 5]
       [--litdata-python PATH] [--big 10000000000]

A uint16 token memmap (a ``.npy`` file). For each seq_len (1024, 4096) with batch 32:

Every run but nanoGPT's and LitData's reads one whole epoch 0 (``N // seq_len - 1``
windows in batches of 32):

- ``raw memmap slicing``: the same windows as epochal's epoch 0 (same starts, same order),
  each sliced from the memmap and stacked (``numpy.stack`` of ``mm[s : s + seq_len + 1]``),
  as a tensor; the baseline of every ratio;
- ``raw vectorised gather``: the same windows as one fancy-index of a
  ``sliding_window_view`` of the memmap per batch (what epochal does inside);
- ``epochal.tokens + Loader``, ``num_workers`` 0 and 2 (a memory gather is read in the
  calling process even with workers; see ``Loader.uses_workers``);
- ``epochal.tokens over a store's list column``: the same tokens cut into documents of
  1 to 2,000 tokens, written as one record per document (``epochal.write(...,
  lists=["tokens"])``, 8 MiB shards), read as one stream from the shards' memory maps:
  the same windows as the memmap's (checked);
- ``nanoGPT get_batch``: nanoGPT's recipe (a fresh ``np.memmap`` per batch, random offsets
  from ``torch.randint``, ``x`` and ``y`` stacked as int64), sampling with replacement;
- ``LitData TokensLoader`` (with ``--litdata-python``, the interpreter of a venv where
  litdata is installed): its ``StreamingDataset`` over chunks that ``litdata.optimize``
  wrote from the same tokens, read in that interpreter (a subprocess), so its rate comes
  from another process and only roughly from the same moment.

Runs are interleaved round by round; ratios are medians of per-round ratios to the raw
slicing of the same round. Memory: a sparse file of ``--big`` uint16 tokens (10^10 by
default: 20 GB of address space, no disk blocks), opened by ``epochal.tokens`` and read for
50 batches; the private memory (``RssAnon``) it adds is printed next to what a sample index
of one int64 per window (Megatron-style) would take.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import tyro

import epochal
from _timing import _interleaved, _print_table, _ratio_text

BATCH = 32


@dataclasses.dataclass(kw_only=True)
class Config:
    """Options of the token benchmark."""

    tokens: int = 50_000_000
    """Tokens in the benchmark stream (uint16)."""
    batches: int = 100
    """Batches of 32 windows per timed nanoGPT and LitData run (the others run one epoch)."""
    repeats: int = 5
    """Interleaved rounds; the table shows medians."""
    seq_lens: tuple[int, ...] = (1024, 4096)
    """Context lengths measured."""
    litdata_python: str | None = None
    """Python of a venv with litdata installed (its TokensLoader is then measured)."""
    big: int = 10_000_000_000
    """Tokens of the sparse file for the memory measurement (0 skips it)."""
    workdir: Path | None = None
    """Where to write the data (default: a temporary directory, removed afterwards)."""


def _status(field: str) -> int:
    """A /proc/self/status field in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return -1


def _epochal_run(src: epochal.TokenSource, workers: int):
    loader = epochal.Loader(src, BATCH, seed=0, num_workers=workers)

    def go() -> int:  # one whole epoch: the order is computed in blocks of 64K positions
        loader.set_epoch(0)
        return sum(len(b["tokens"]) for b in loader)

    return go, loader


def _raw_run(path: Path, starts: np.ndarray, seq_len: int):
    mm = np.load(path, mmap_mode="r")

    def go() -> int:
        done = 0
        for rows in starts:
            batch = torch.from_numpy(np.stack([mm[s : s + seq_len + 1] for s in rows.tolist()]))
            done += len(batch)
        return done

    return go


def _gather_run(path: Path, starts: np.ndarray, seq_len: int):
    windows = np.lib.stride_tricks.sliding_window_view(np.load(path, mmap_mode="r"), seq_len + 1)

    def go() -> int:
        return sum(len(torch.from_numpy(windows[rows])) for rows in starts)

    return go


def _nanogpt_run(path: Path, n: int, seq_len: int, batches: int):
    generator = torch.Generator().manual_seed(0)
    header = np.load(path, mmap_mode="r").offset  # nanoGPT reads a raw .bin; skip the .npy header

    def go() -> int:
        done = 0
        for _ in range(batches):
            # nanoGPT's get_batch: a new memmap per batch (it says this avoids a memory leak)
            data = np.memmap(path, dtype=np.uint16, mode="r", offset=header, shape=(n,))
            ix = torch.randint(n - seq_len, (BATCH,), generator=generator)
            x = torch.stack([torch.from_numpy(data[i : i + seq_len].astype(np.int64)) for i in ix])
            y = torch.stack(
                [torch.from_numpy(data[i + 1 : i + 1 + seq_len].astype(np.int64)) for i in ix]
            )
            done += len(x) + 0 * len(y)
        return done

    return go


_LITDATA = r"""
import functools, json, os, sys, time
import numpy as np
from litdata import StreamingDataLoader, StreamingDataset, TokensLoader, optimize

PIECES = 64


def piece(path, i):
    mm = np.load(path, mmap_mode="r")
    step = -(-len(mm) // PIECES)
    yield np.asarray(mm[i * step : (i + 1) * step]).astype(np.uint16)


if __name__ == "__main__":
    path, out, seq_len, batches, workers, repeats = sys.argv[1:7]
    seq_len, batches, workers, repeats = int(seq_len), int(batches), int(workers), int(repeats)
    if not os.path.exists(os.path.join(out, "index.json")):
        optimize(fn=functools.partial(piece, path), inputs=list(range(PIECES)), output_dir=out,
                 chunk_size=(4096 + 1) * 1024, item_loader=TokensLoader(), num_workers=1)
    rates = []
    for _ in range(repeats):
        ds = StreamingDataset(out, item_loader=TokensLoader(block_size=seq_len + 1),
                              shuffle=True, seed=0)
        dl = StreamingDataLoader(ds, batch_size=32, num_workers=workers)
        it = iter(dl)
        next(it)
        start, done = time.perf_counter(), 0
        for _, b in zip(range(batches), it):
            done += len(b)
        rates.append(done / (time.perf_counter() - start))
    print(json.dumps(rates))
"""


def _litdata(cfg: Config, path: Path, directory: Path, seq_len: int, workers: int) -> list[float]:
    assert cfg.litdata_python is not None
    out = directory / "litdata"  # one optimized copy serves every seq_len (TokensLoader)
    script = directory / "litdata_run.py"  # a file: litdata's workers re-import it (spawn)
    script.write_text(_LITDATA)
    result = subprocess.run(
        [
            cfg.litdata_python,
            str(script),
            str(path),
            str(out),
            str(seq_len),
            str(cfg.batches),
            str(workers),
            str(cfg.repeats),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode:
        raise RuntimeError(result.stderr.strip().splitlines()[-1])
    return json.loads(result.stdout.strip().splitlines()[-1])


def _memory(big: int, directory: Path) -> list[tuple[str, str, str]]:
    path = directory / "big.u16"
    with open(path, "wb") as f:  # sparse: the size without the blocks
        f.truncate(2 * big)
    before = _status("RssAnon")
    src = epochal.tokens(path, 1024, dtype=np.uint16)
    loader = epochal.Loader(src, BATCH, seed=0)
    start = time.perf_counter()
    for _ in loader.steps(50):
        pass
    seconds = time.perf_counter() - start
    added = _status("RssAnon") - before
    index = len(src) * 8
    path.unlink()
    return [
        (
            f"{big:.0e} tokens, seq_len 1024 ({len(src):,} windows)",
            f"+{added / 2**20:.1f} MiB private memory after building the source and loader "
            f"and reading 50 batches ({seconds * 1e3 / 50:.1f} ms/batch, pages of a sparse file)",
            "O(1) beyond the memmap",
        ),
        (
            "  a sample index instead (one int64 per window)",
            f"{index / 2**20:,.0f} MiB, and a permutation of as many",
            "",
        ),
    ]


def run(cfg: Config) -> None:
    with tempfile.TemporaryDirectory(dir=cfg.workdir) as tmp:
        directory = Path(tmp)
        path = directory / "tokens.npy"
        rng = np.random.default_rng(0)
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(cfg.tokens,))
        for lo in range(0, cfg.tokens, 1 << 24):
            hi = min(cfg.tokens, lo + (1 << 24))
            mm[lo:hi] = rng.integers(0, 50_257, hi - lo, dtype=np.uint16)
        mm.flush()
        del mm
        print(
            f"token benchmark: {cfg.tokens:,} uint16 tokens, batch {BATCH}, one epoch per run "
            f"({cfg.batches} batches for nanoGPT), {cfg.repeats} interleaved rounds (shared 2-core machine: "
            f"compare the ratios)"
        )
        flat = np.load(path, mmap_mode="r")
        cuts = np.cumsum(rng.integers(1, 2001, cfg.tokens // 1000 + 1))
        docs = np.split(flat, cuts[cuts < cfg.tokens])
        # 8 MiB shards: several pieces even for a small run (windows then read by address
        # across them, and some cross a shard's end), as in a real store of many shards
        epochal.write(
            ({"tokens": d} for d in docs), directory / "store", lists=["tokens"], shard_size=8 << 20
        )
        store = epochal.open(directory / "store")
        print(
            f"store: {len(store):,} documents in {len(store.manifest.shards)} shards "
            f"(list column {store.columns[0].describe()})"
        )
        for seq_len in cfg.seq_lens:
            src = epochal.tokens(str(path), seq_len)
            runs = {}
            runs["raw memmap slicing"] = None
            loaders: dict[object, epochal.Loader] = {}
            for workers in (0, 2):
                runs[f"epochal.tokens Loader, workers {workers}"], loaders[workers] = _epochal_run(
                    src, workers
                )
            from_store = epochal.tokens(store, seq_len)
            assert len(from_store) == len(src)
            name = "epochal.tokens over a store's list column, workers 0"
            runs[name], loaders["store"] = _epochal_run(from_store, 0)
            order = epochal.make_order(len(src), seed=0, epoch=0)
            windows = order.index(np.arange(len(src)))
            starts = np.array_split(
                src.offset(0, seed=0) + windows * seq_len, range(BATCH, len(src), BATCH)
            )
            runs["raw memmap slicing"] = _raw_run(path, starts, seq_len)
            runs["raw vectorised gather (one fancy-index)"] = _gather_run(path, starts, seq_len)
            runs["nanoGPT get_batch (with replacement)"] = _nanogpt_run(
                path, cfg.tokens, seq_len, cfg.batches
            )
            # the raw run reads exactly epochal's windows: check it before timing them
            expected = np.stack([flat[s : s + seq_len + 1] for s in starts[0]])
            for key in (0, "store"):
                first = next(iter(loaders[key].steps(1)))["tokens"].numpy()
                assert np.array_equal(first, expected), key
            rates = _interleaved(runs, cfg.repeats)
            base = rates["raw memmap slicing"]
            gather = rates["raw vectorised gather (one fancy-index)"]
            rows = []
            for name, values in rates.items():
                text = _ratio_text(values, base, "of raw slicing").replace("samples", "windows")
                if name.startswith("epochal"):
                    text += ", " + _ratio_text(values, gather, "of the gather", rate=False)
                rows.append((name, text, ">= 0.8x" if name.startswith("epochal") else ""))
            if cfg.litdata_python:
                for workers in (0, 2):
                    try:
                        lit = _litdata(cfg, path, directory, seq_len, workers)
                        text = (
                            f"{np.median(lit):,.0f} windows/s = "
                            f"{np.median(lit) / np.median(base):.2f}x of raw slicing's median "
                            f"(another process, rounds not interleaved)"
                        )
                    except Exception as err:  # report, do not hide, a peer that fails
                        text = f"failed: {err}"
                    rows.append((f"LitData TokensLoader, workers {workers}", text, ""))
            for loader in loaders.values():
                del loader
            _print_table(f"seq_len {seq_len} (windows of {seq_len + 1} tokens):", rows)
        if cfg.big:
            _print_table("memory:", _memory(cfg.big, directory))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its tables."""
    cfg = tyro.cli(Config, args=argv)
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
