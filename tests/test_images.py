"""decode_image and image pipelines: stores keep images encoded, transforms decode them;
a decode + random-resized-crop + flip pipeline gives the same batches for any worker
count; `epochal train` trains from a store built from an image folder."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

pytest.importorskip("PIL", reason="decode_image needs Pillow (the images/test extras)")
from PIL import Image

import epochal
from epochal.store._ingest import ingest


def _encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _picture(seed: int, h: int = 24, w: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _image_folder(root, per_class: int = 6, classes: int = 2):
    for label in range(classes):
        (root / f"class{label}").mkdir(parents=True)
        for k in range(per_class):
            image = np.full((20 + k, 28, 3), 60 + 120 * label, dtype=np.uint8)
            image[..., label] = 255  # a class-coloured channel, learnable
            (root / f"class{label}" / f"{k}.jpg").write_bytes(_encode(image, "JPEG"))
    return root


def test_decode_png_is_lossless_in_both_layouts():
    picture = _picture(0)
    data = _encode(picture)
    hwc = epochal.decode_image(data)
    assert hwc.dtype == np.uint8 and hwc.shape == (24, 32, 3)
    np.testing.assert_array_equal(hwc, picture)
    chw = epochal.decode_image(data, layout="CHW", tensor=True)
    assert isinstance(chw, torch.Tensor) and chw.shape == (3, 24, 32)
    assert torch.equal(chw, torch.from_numpy(picture).permute(2, 0, 1))
    gray = epochal.decode_image(np.frombuffer(data, dtype=np.uint8), mode="L")
    assert gray.shape == (24, 32, 1)
    assert epochal.decode_image(data, size=(12, 16)).shape == (12, 16, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data": b"not an image"}, r"cannot decode image \(12 bytes"),
        ({"data": 5}, "needs the encoded bytes"),
        ({"data": b"", "mode": "CMYK"}, "mode must be one of"),
        ({"data": b"", "layout": "NHWC"}, "layout must be one of"),
        ({"data": b"", "size": 0}, "size must be a positive int"),
    ],
)
def test_bad_input_is_refused_with_what_is_valid(kwargs, message):
    with pytest.raises(epochal.Error, match=message):
        epochal.decode_image(**kwargs)


def random_resized_crop_flip(record, rng, *, size: int = 16):
    """What torchvision's RandomResizedCrop(size) + RandomHorizontalFlip do, drawn from the
    record's generator (so it is the same in any worker)."""
    image = epochal.decode_image(record["image"])
    h, w = image.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        ch, cw = round(math.sqrt(area / ratio)), round(math.sqrt(area * ratio))
        if 0 < ch <= h and 0 < cw <= w:
            break
    else:
        ch, cw = h, w
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = Image.fromarray(image[y : y + ch, x : x + cw]).resize((size, size), Image.BILINEAR)
    out = np.asarray(crop)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return {"image": np.ascontiguousarray(out.transpose(2, 0, 1)), "label": record["label"]}


def test_decode_crop_flip_pipeline_is_identical_for_any_worker_count(tmp_path):
    root = _image_folder(tmp_path / "images")
    result = ingest(root)
    epochal.write(result.records, tmp_path / "store", metadata=result.metadata)
    store = epochal.open(tmp_path / "store")
    assert isinstance(store[0]["image"], bytes), "the store keeps images encoded"

    def batches(num_workers):
        loader = epochal.Loader(
            store, 4, seed=3, transform=random_resized_crop_flip, num_workers=num_workers
        )
        return [b for _ in range(2) for b in loader]

    inline, workers = batches(0), batches(2)
    assert len(inline) == len(workers) == 6
    for a, b in zip(inline, workers):
        assert a["image"].shape == (4, 3, 16, 16) and torch.equal(a["image"], b["image"])
        assert torch.equal(a["label"], b["label"])
    assert not torch.equal(inline[0]["image"], inline[3]["image"])


def test_train_command_trains_from_an_image_folder_store(tmp_path):
    """Issue 14 item 4: 'small_cnn needs (C, H, W) image inputs, got records of shape ()'."""
    from epochal.train.config import DataConfig, ModelConfig, RunConfig, TrainerConfig
    from epochal.train.run import run

    root = _image_folder(tmp_path / "images")
    result = ingest(root)
    epochal.write(result.records, tmp_path / "store", metadata=result.metadata)
    config = RunConfig(
        run_dir=str(tmp_path / "run"),
        data=DataConfig(
            train=str(tmp_path / "store"),
            val=str(tmp_path / "store"),
            batch_size=4,
            image_size=16,
            augment=True,
        ),
        model=ModelConfig(num_classes=2),
        trainer=TrainerConfig(max_steps=6, progress=False),
    )
    metrics = run(config)
    assert math.isfinite(metrics["val_loss"])
