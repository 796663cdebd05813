"""Image decoding for transforms: stores keep images encoded, transforms decode them.

An ``epochal build`` of an image folder stores each file's bytes unchanged (JPEG stays
JPEG: a fraction of the decoded size on disk and over the network), so decoding belongs
in the transform, which runs in the Loader's workers::

    def transform(record, rng):
        image = epochal.decode_image(record["image"], layout="CHW", tensor=True)
        ...

Pillow does the decoding (``pip install 'epochal[images]'``); ``simplejpeg`` is used for
RGB/grayscale JPEGs when it happens to be installed (it is faster and gives the same
kind of array). Neither is imported until the first call.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from epochal._errors import Error

__all__ = ["decode_image"]

_MODES = ("RGB", "L", "RGBA")
_LAYOUTS = ("HWC", "CHW")
_JPEG_MAGIC = b"\xff\xd8\xff"
_fast_jpeg: Any = None  # simplejpeg's decode_jpeg, False when it is not installed


def _simplejpeg() -> Any:
    global _fast_jpeg
    if _fast_jpeg is None:
        try:
            import simplejpeg

            _fast_jpeg = simplejpeg.decode_jpeg
        except ImportError:
            _fast_jpeg = False
    return _fast_jpeg


def _pillow(data: bytes, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as err:
        raise Error(
            "decode_image needs Pillow: pip install 'epochal[images]' (or pip install pillow)"
        ) from err
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode != mode:  # convert() copies even when the mode is already right
                image = image.convert(mode)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(image)
    except Exception as err:  # Pillow raises several types for bad data
        head = bytes(data[:8])
        raise Error(
            f"cannot decode image ({len(data)} bytes starting {head!r}): {err}; expected "
            f"the bytes of an image file (JPEG, PNG, ...)"
        ) from err


def decode_image(
    data: bytes | bytearray | memoryview | np.ndarray,
    *,
    mode: str = "RGB",
    layout: str = "HWC",
    tensor: bool = False,
    size: int | tuple[int, int] | None = None,
) -> Any:
    """Decode the bytes of an image file (JPEG, PNG, WebP, ...) to a uint8 array.

    Args:
        data: the encoded image, as a store's binary column gives it (bytes, or a uint8
            numpy array of the file's bytes).
        mode: ``"RGB"`` (3 channels), ``"L"`` (grayscale, 1 channel) or ``"RGBA"``.
        layout: ``"HWC"`` (height, width, channels: what PIL and numpy code expect) or
            ``"CHW"`` (what torch models and ``torchvision.transforms.v2`` expect).
        tensor: return a ``torch.Tensor`` (uint8) instead of a numpy array.
        size: resize (bilinear, with Pillow) to ``(height, width)``, or a square of this
            side; None keeps the file's size. Use it for a fixed model input; random
            crops belong in the augmentation.

    Returns:
        A uint8 array or tensor of shape ``(H, W, C)`` or ``(C, H, W)``; grayscale keeps a
        channel axis of 1.

    Raises:
        epochal.Error: bad arguments, data that is not an image, or Pillow missing.
    """
    if mode not in _MODES:
        raise Error(f"decode_image mode must be one of {list(_MODES)}, got {mode!r}")
    if layout not in _LAYOUTS:
        raise Error(f"decode_image layout must be one of {list(_LAYOUTS)}, got {layout!r}")
    if isinstance(data, np.ndarray):
        data = data.tobytes()
    elif isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise Error(f"decode_image needs the encoded bytes of an image, got {type(data).__name__}")
    if size is not None:
        pair = (size, size) if isinstance(size, int) else tuple(size)
        if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
            raise Error(
                f"decode_image size must be a positive int or (height, width), got {size!r}"
            )
        size = (pair[0], pair[1])
    array = None
    # the fast decoder only where Pillow would not resize afterwards (one resampler)
    fast = _simplejpeg() if size is None and mode != "RGBA" and data[:3] == _JPEG_MAGIC else None
    if fast:
        try:
            array = fast(data, colorspace="GRAY" if mode == "L" else "RGB")
        except Exception:
            array = None  # e.g. a CMYK or progressive file simplejpeg refuses: Pillow reads it
    if array is None:
        array = _pillow(data, mode, size)
    if array.ndim == 2:
        array = array[:, :, None]
    if layout == "CHW":
        array = np.ascontiguousarray(array.transpose(2, 0, 1))
    if tensor:
        import torch

        return torch.from_numpy(np.array(array, copy=not array.flags.writeable))
    return array
