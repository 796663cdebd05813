"""Frameworks benchmark: image pipelines from a store vs a PIL Dataset + DataLoader over the
same files, and Hugging Face datasets through from_dataset vs a store of the same rows.

Images: decode + random-resized-crop + horizontal flip of JPEGs. epochal reads the encoded
bytes from a store built from the image folder and decodes with ``epochal.decode_image`` in
the transform; the baseline is what ``torchvision.datasets.ImageFolder`` does (a map-style
Dataset that opens each file with PIL) under a shuffling DataLoader, cropping and resizing
the way torchvision's ``RandomResizedCrop`` does a PIL image (crop, then one bilinear
resize); torchvision itself cannot be imported on this machine. Both sides draw the same
boxes and produce the same pixels. Both at 0 and 2 workers, the four loaders interleaved in
every round (so the 2-workers-vs-0 ratio compares runs of the same round too). Two
bare runs, the pipeline without any loader in 1 and in 2 forked processes, show what a
second core gives this work on this machine: the ceiling of 2 workers against 0.

HF: one epoch of a ``datasets.Dataset`` (an int label and a list of 16 floats per row)
through ``from_dataset`` (the columnar path) and from a store written from the same Dataset
by ``epochal.write``, and the first batches of an epoch through the generic map-style path
that ``from_dataset`` used before (``__getitems__`` rows, lists of lists; ~100x slower, so
it reads a tenth of the rows).

Every comparison runs interleaved in the same process, the order rotating from round to
round; the table shows medians of the per-round rates and of the per-round ratios. The
defaults take about two minutes on an idle 2-core machine.
"""

from __future__ import annotations

import dataclasses
import gc
import io
import itertools
import math
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro

import epochal
from _timing import _print_table, _ratio_text
from epochal.sources._dataset import DatasetSource
from epochal.store._ingest import ingest


@dataclasses.dataclass(kw_only=True)
class Config:
    """Options of the frameworks benchmark."""

    images: int = 2048
    """JPEG files in the image folder (128 x 96 pixels each; 0 skips the image part). An
    epoch of 64 batches: enough that starting and draining the workers is a small part."""
    crop: int = 64
    """Side of the random-resized crop."""
    batch_size: int = 32
    """Images per batch."""
    rows: int = 50_000
    """Rows of the Hugging Face dataset (0 skips the HF part)."""
    hf_batch_size: int = 256
    """Rows per batch in the HF comparison."""
    repeats: int = 7
    """Interleaved rounds; the table shows medians."""


def _crop_box(h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (scale 0.08..1, ratio 3/4..4/3, 10 tries, then the whole)."""
    for _ in range(10):
        area = h * w * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        ch, cw = round(math.sqrt(area / ratio)), round(math.sqrt(area * ratio))
        if 0 < ch <= h and 0 < cw <= w:
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            return y, x, ch, cw
    return 0, 0, h, w


def _flip_chw(out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def _crop_flip_pil(image: Any, rng: np.random.Generator, size: int) -> np.ndarray:
    """The baseline: torchvision's RandomResizedCrop of a PIL image (crop, then a bilinear
    resize) and a flip, as a CHW uint8 array."""
    from PIL import Image

    y, x, ch, cw = _crop_box(image.height, image.width, rng)
    crop = image.crop((x, y, x + cw, y + ch)).resize((size, size), Image.BILINEAR)
    return _flip_chw(np.asarray(crop), rng)


def _crop_flip_array(image: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """epochal's side: the same box of a decoded HWC array (a view: only the crop is
    copied into Pillow), the same resize and flip, so the pixels equal the baseline's."""
    from PIL import Image

    y, x, ch, cw = _crop_box(image.shape[0], image.shape[1], rng)
    crop = Image.fromarray(image[y : y + ch, x : x + cw]).resize((size, size), Image.BILINEAR)
    return _flip_chw(np.asarray(crop), rng)


class _StoreTransform:
    """epochal's side: decode the stored bytes, then the same crop and flip."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        image = epochal.decode_image(record["image"])
        return {"image": _crop_flip_array(image, rng, self.size), "label": record["label"]}


class _PILFolder(torch.utils.data.Dataset):
    """What ImageFolder does: PIL opens each file by path; then the same crop and flip."""

    def __init__(self, files: list[tuple[str, int]], size: int) -> None:
        self.files, self.size = files, size
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from PIL import Image

        path, label = self.files[i]
        with open(path, "rb") as f:
            image = Image.open(f).convert("RGB")
        rng = np.random.default_rng((self.epoch, i))
        return {"image": torch.from_numpy(_crop_flip_pil(image, rng, self.size)), "label": label}


def _image_folder(root: Path, count: int) -> list[tuple[str, int]]:
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:128]
    files = []
    for k in range(count):
        label = k % 4
        (root / f"c{label}").mkdir(parents=True, exist_ok=True)
        base = (np.stack([xx * 2, yy * 2, (xx + yy)], axis=-1) + 40 * label) % 256
        pixels = np.clip(base + rng.normal(0, 12, size=base.shape), 0, 255).astype(np.uint8)
        path = root / f"c{label}" / f"{k:05d}.jpg"
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        path.write_bytes(buffer.getvalue())
        files.append((str(path), label))
    return sorted(files)


def _worker_pids(loader: Any) -> list[int]:
    """The worker processes of a DataLoader (or of an epochal Loader's) started by a
    pass; none at 0 workers. Private attributes: this is only for measuring."""
    dataloader = getattr(loader, "_dataloader", loader)
    iterator = getattr(dataloader, "_iterator", None)
    return [w.pid for w in getattr(iterator, "_workers", ())]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux's /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rounds(
    runs: dict[str, Callable[[], int]], repeats: int, workers: dict[str, Any] | None = None
) -> tuple[dict[str, list[float]], dict[str, float], dict[str, float]]:
    """Samples/s of each run in each of ``repeats`` rounds; the median CPU seconds per
    sample of this process in each run, and of its worker processes (``workers`` maps a
    run to its loader) - measures of work that another load on the machine inflates much
    less than it does time. Every round runs each once, in an order rotated by one per
    round, so no run always follows the same neighbour."""
    names = list(runs)
    rates: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    worker_cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            pids = _worker_pids((workers or {}).get(name))
            before = [_cpu_seconds(pid) for pid in pids]
            start, start_cpu = time.perf_counter(), time.process_time()
            samples = runs[name]()
            rates[name].append(samples / (time.perf_counter() - start))
            cpu[name].append((time.process_time() - start_cpu) / samples)
            spent = sum(_cpu_seconds(pid) - b for pid, b in zip(pids, before))
            worker_cpu[name].append(spent / samples)
    median = statistics.median
    return (
        rates,
        {name: median(v) for name, v in cpu.items()},
        {name: median(v) for name, v in worker_cpu.items()},
    )


def _epoch(loader: Any, batches: int | None = None) -> Callable[[], int]:
    """A run of the first ``batches`` batches (None: all) of epoch 0 of an epochal Loader
    or of one epoch of a DataLoader; returns the samples delivered."""

    def go() -> int:
        if isinstance(loader, epochal.Loader):
            loader.set_epoch(0)
        return sum(len(b["label"]) for b in itertools.islice(loader, batches))

    return go


def _bare(store: Any, size: int, processes: int) -> Callable[[], int]:
    """No loader: the same decode + crop + flip of every record, split over
    ``processes`` forked processes that share nothing, so two of them show how much a
    second core gives this work on this machine (the ceiling of any loader's workers)."""
    transform = _StoreTransform(size)

    def part(indices: range) -> None:
        for i in indices:
            transform(store[i], np.random.default_rng(i))

    def go() -> int:
        n = len(store)
        if processes == 1:
            part(range(n))
            return n
        context = multiprocessing.get_context("fork")
        procs = [
            context.Process(target=part, args=(range(k, n, processes),)) for k in range(processes)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        return n

    return go


def _images(cfg: Config, work: Path) -> list[tuple[str, str, str]]:
    files = _image_folder(work / "folder", cfg.images)
    result = ingest(work / "folder")
    epochal.write(result.records, work / "store", metadata=result.metadata)
    store = epochal.open(work / "store")
    _check_same_pixels(store, files, cfg.crop)
    runs, loaders = {}, {}
    for workers in (0, 2):
        # the transform draws only from its rng argument, as the baseline's Dataset draws
        # only from its own generator: neither needs the global RNGs seeded per record
        loader = epochal.Loader(
            store,
            cfg.batch_size,
            seed=0,
            transform=_StoreTransform(cfg.crop),
            num_workers=workers,
            seed_globals=False,
        )
        baseline = torch.utils.data.DataLoader(
            _PILFolder(files, cfg.crop),
            batch_size=cfg.batch_size,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
        )
        runs[f"epochal {workers}"], runs[f"pil {workers}"] = _epoch(loader), _epoch(baseline)
        loaders[f"epochal {workers}"], loaders[f"pil {workers}"] = loader, baseline
    # the default seed_globals=True (python random, np.random and torch seeded per record,
    # for transforms such as torchvision's that draw from them): what it costs
    runs["epochal 0 seeded"] = _epoch(
        epochal.Loader(store, cfg.batch_size, seed=0, transform=_StoreTransform(cfg.crop))
    )
    if "fork" in multiprocessing.get_all_start_methods():
        runs["bare 1"], runs["bare 2"] = _bare(store, cfg.crop, 1), _bare(store, cfg.crop, 2)
    for run in runs.values():
        run()  # start the workers, warm the page cache
    rates, cpu, worker_cpu = _rounds(runs, cfg.repeats, loaders)
    rows = []
    for workers in (0, 2):
        mine, base = rates[f"epochal {workers}"], rates[f"pil {workers}"]
        rows.append(
            (
                f"PIL Dataset + DataLoader, {workers} workers",
                f"{statistics.median(base):,.0f} images/s",
                "",
            )
        )
        rows.append(
            (
                f"epochal store + decode_image, {workers} workers",
                _ratio_text(mine, base, "the PIL Dataset").replace("samples/s", "images/s"),
                ">= 1.0x",
            )
        )
    rows.append(
        (
            "  the same with seed_globals=True, 0 workers",
            _ratio_text(rates["epochal 0 seeded"], rates["pil 0"], "the PIL Dataset").replace(
                "samples/s", "images/s"
            ),
            "",
        )
    )
    for run in ("epochal 0", "pil 0", "epochal 0 seeded", "epochal 2", "pil 2"):
        rows.append((f"CPU ms per image in the main process, {run}", f"{cpu[run] * 1e3:.3f}", ""))
    for run in ("epochal 2", "pil 2"):
        rows.append(
            (f"CPU ms per image in the 2 workers, {run}", f"{worker_cpu[run] * 1e3:.3f}", "")
        )
    for name in ("epochal", "pil"):
        rows.append(
            (
                f"{'epochal' if name == 'epochal' else 'PIL Dataset'} 2 workers vs 0 workers",
                _ratio_text(rates[f"{name} 2"], rates[f"{name} 0"], "", rate=False),
                ">= 1.6x on 2 cores" if name == "epochal" else "",
            )
        )
    if "bare 2" in rates:
        rows.append(
            (
                "no loader: the pipeline in 2 processes vs 1",
                _ratio_text(rates["bare 2"], rates["bare 1"], "", rate=False)
                + " (this machine's ceiling for 2 workers)",
                "",
            )
        )
    for name in ("epochal", "pil"):
        # what 2 otherwise idle cores would give: 2 cores over the CPU time of an image in
        # all three processes, against 1 core over that of the 0-worker run
        total = cpu[f"{name} 2"] + worker_cpu[f"{name} 2"]
        rows.append(
            (
                f"{'epochal' if name == 'epochal' else 'PIL Dataset'} 2 vs 0 workers from CPU time",
                f"{2 * cpu[f'{name} 0'] / total:.2f}x (2 idle cores / CPU ms per image in all "
                f"processes)",
                "",
            )
        )
    return rows


def _check_same_pixels(store: Any, files: list[tuple[str, int]], size: int) -> None:
    """Both sides do the same work: the store holds the files' bytes, and an equal box of
    equal pixels gives an equal crop whether it starts from a PIL image or an array."""
    from PIL import Image

    for i in (0, len(files) // 2):
        data = Path(files[i][0]).read_bytes()
        assert store[i]["image"] == data, "the store must hold the same files"
        mine = _StoreTransform(size)(store[i], np.random.default_rng(i))["image"]
        image = Image.fromarray(epochal.decode_image(data))
        theirs = _crop_flip_pil(image, np.random.default_rng(i), size)
        assert np.array_equal(mine, theirs), "the two pipelines must produce the same pixels"


def _hf(cfg: Config, work: Path) -> list[tuple[str, str, str]]:
    import datasets

    rng = np.random.default_rng(0)
    ds = datasets.Dataset.from_dict(
        {
            "x": rng.normal(size=(cfg.rows, 16)).astype(np.float32),
            "label": rng.integers(0, 10, size=cfg.rows),
        }
    )
    epochal.write(ds, work / "hf_store")
    batches = math.ceil(cfg.rows / cfg.hf_batch_size)
    runs = {
        "store": _epoch(epochal.Loader(epochal.open(work / "hf_store"), cfg.hf_batch_size, seed=0)),
        "columnar": _epoch(epochal.Loader(epochal.from_dataset(ds), cfg.hf_batch_size, seed=0)),
        "generic": _epoch(
            epochal.Loader(DatasetSource(ds), cfg.hf_batch_size, seed=0), max(1, batches // 10)
        ),
    }
    rates, _, _ = _rounds(runs, cfg.repeats)
    return [
        ("store of the same rows", f"{statistics.median(rates['store']):,.0f} samples/s", ""),
        (
            "from_dataset(hf), columnar",
            _ratio_text(rates["columnar"], rates["store"], "the store"),
            ">= 0.5x",
        ),
        (
            "map-style rows (from_dataset before)",
            _ratio_text(rates["generic"], rates["store"], "the store"),
            "",
        ),
        (
            "columnar vs map-style rows",
            _ratio_text(rates["columnar"], rates["generic"], "", rate=False),
            ">= 4x",
        ),
    ]


def main() -> int:
    cfg = tyro.cli(Config, description=__doc__.splitlines()[0])
    with tempfile.TemporaryDirectory(prefix="epochal-bench-frameworks-") as tmp:
        work = Path(tmp)
        if cfg.images:
            _print_table(
                f"images: {cfg.images} JPEGs 128x96, decode + random-resized-crop {cfg.crop} + "
                f"flip, batch {cfg.batch_size}, median of {cfg.repeats} interleaved rounds",
                _images(cfg, work),
            )
        if cfg.rows:
            _print_table(
                f"Hugging Face datasets: {cfg.rows:,} rows (int label + 16 float32), batch "
                f"{cfg.hf_batch_size}, median of {cfg.repeats} interleaved rounds",
                _hf(cfg, work),
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
