"""Frameworks benchmark: image pipelines from a store vs a PIL Dataset + DataLoader over the
same files, and Hugging Face datasets through from_dataset vs a store of the same rows.

Images: decode + random-resized-crop + horizontal flip of JPEGs. epochal reads the encoded
bytes from a store built from the image folder and decodes with ``epochal.decode_image`` in
the transform; the baseline is what ``torchvision.datasets.ImageFolder`` does (a map-style
Dataset that opens each file with PIL) under a shuffling DataLoader, with the same crop and
flip code (torchvision itself cannot be imported on this machine). Both at 0 and 2 workers.

HF: one epoch of a ``datasets.Dataset`` (an int label and a list of 16 floats per row)
through ``from_dataset`` (the columnar path), through the generic map-style path that
``from_dataset`` used before (``__getitems__`` rows, lists of lists), and from a store
written from the same Dataset by ``epochal.write``.

Every comparison runs interleaved in the same process; the table shows medians of the
per-round rates and ratios.
"""

from __future__ import annotations

import dataclasses
import io
import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro

import epochal
from _timing import _interleaved, _loader_epoch, _print_table, _ratio_text
from epochal.sources._dataset import DatasetSource
from epochal.store._ingest import ingest


@dataclasses.dataclass(kw_only=True)
class Config:
    """Options of the frameworks benchmark."""

    images: int = 512
    """JPEG files in the image folder (128 x 96 pixels each; 0 skips the image part)."""
    crop: int = 64
    """Side of the random-resized crop."""
    batch_size: int = 32
    """Images per batch."""
    rows: int = 50_000
    """Rows of the Hugging Face dataset (0 skips the HF part)."""
    hf_batch_size: int = 256
    """Rows per batch in the HF comparison."""
    repeats: int = 3
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


def _crop_flip(image: Any, rng: np.random.Generator, size: int) -> np.ndarray:
    """Random-resized crop (bilinear) and flip of a PIL image, as a CHW uint8 array."""
    from PIL import Image

    y, x, ch, cw = _crop_box(image.height, image.width, rng)
    out = np.asarray(image.resize((size, size), Image.BILINEAR, box=(x, y, x + cw, y + ch)))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out.transpose(2, 0, 1))


class _StoreTransform:
    """epochal's side: decode the stored bytes, then the shared crop and flip."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        from PIL import Image

        image = Image.fromarray(epochal.decode_image(record["image"]))
        return {"image": _crop_flip(image, rng, self.size), "label": record["label"]}


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
        return {"image": torch.from_numpy(_crop_flip(image, rng, self.size)), "label": label}


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


def _dataloader_epoch(loader: torch.utils.data.DataLoader) -> Any:
    def go() -> int:
        return sum(len(b["label"]) for b in loader)

    return go


def _images(cfg: Config, work: Path) -> list[tuple[str, str, str]]:
    files = _image_folder(work / "folder", cfg.images)
    result = ingest(work / "folder")
    epochal.write(result.records, work / "store", metadata=result.metadata)
    store = epochal.open(work / "store")
    rows = []
    rates_by_workers = {}
    for workers in (0, 2):
        loader = epochal.Loader(
            store,
            cfg.batch_size,
            seed=0,
            transform=_StoreTransform(cfg.crop),
            num_workers=workers,
        )
        baseline = torch.utils.data.DataLoader(
            _PILFolder(files, cfg.crop),
            batch_size=cfg.batch_size,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
        )
        _loader_epoch(loader)(), _dataloader_epoch(baseline)()  # start workers, warm caches
        rates = _interleaved(
            {"epochal": _loader_epoch(loader), "pil": _dataloader_epoch(baseline)}, cfg.repeats
        )
        rates_by_workers[workers] = rates
        base = f"PIL Dataset + DataLoader, {workers} workers"
        rows.append((base, f"{statistics.median(rates['pil']):,.0f} images/s", ""))
        rows.append(
            (
                f"epochal store + decode_image, {workers} workers",
                _ratio_text(rates["epochal"], rates["pil"], "the PIL Dataset").replace(
                    "samples/s", "images/s"
                ),
                ">= 1.0x",
            )
        )
    rows.append(
        (
            "epochal 2 workers vs 0 workers",
            _ratio_text(
                rates_by_workers[2]["epochal"], rates_by_workers[0]["epochal"], "", rate=False
            ),
            ">= 1.6x on 2 cores",
        )
    )
    return rows


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
    loaders = {
        "store": epochal.Loader(epochal.open(work / "hf_store"), cfg.hf_batch_size, seed=0),
        "columnar": epochal.Loader(epochal.from_dataset(ds), cfg.hf_batch_size, seed=0),
        "generic": epochal.Loader(DatasetSource(ds), cfg.hf_batch_size, seed=0),
    }
    rates = _interleaved({k: _loader_epoch(v) for k, v in loaders.items()}, cfg.repeats)
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
