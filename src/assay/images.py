"""Small images as base64 PNG, written with zlib only (no Pillow needed).

Reports embed evidence images (originals, adversarial examples, perturbations, attribution heatmaps)
as ``data:image/png;base64,...`` URIs. Evaluation images are often tiny (8x8 digits), so they are
upscaled by an integer factor with nearest-neighbour sampling, which keeps the pixels honest: no
smoothing invents detail that the model never saw.
"""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import numpy as np

from assay.errors import InputError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MIN_SIDE = 64  # tiny images are upscaled until their longer side reaches this many pixels


def _as_array(image: Any) -> np.ndarray:
    """numpy view of an array, a torch tensor or nested lists, as float64."""
    if hasattr(image, "detach"):  # torch tensor, without importing torch here
        image = image.detach().cpu().numpy()
    a = np.asarray(image, dtype=np.float64)
    return a


def _to_hwc(a: np.ndarray, what: str) -> np.ndarray:
    """HxW, CxHxW (C in 1, 3) or HxWxC (C in 1, 3) -> HxWxC."""
    if a.ndim == 2:
        return a[:, :, None]
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3):
        return np.transpose(a, (1, 2, 0))
    if a.ndim == 3 and a.shape[0] in (1, 3):
        return np.transpose(a, (1, 2, 0))  # channels-first wins when ambiguous (torch convention)
    if a.ndim == 3 and a.shape[2] in (1, 3):
        return a
    raise InputError(
        f"{what} has shape {tuple(a.shape)}; give HxW or CxHxW with C = 1 (grey) or 3 (RGB)"
    )


def _auto_factor(h: int, w: int, factor: int | None) -> int:
    if factor is not None:
        if int(factor) < 1:
            raise InputError(f"upscaling factor {factor} must be a positive integer")
        return int(factor)
    longest = max(h, w, 1)
    return max(1, -(-_MIN_SIDE // longest))


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of an HxW (grey) or HxWx3 (RGB) uint8 array.

    Parameters
    ----------
    pixels : numpy.ndarray
        ``uint8`` array of shape (H, W), (H, W, 1) or (H, W, 3).

    Returns
    -------
    bytes
        A complete PNG file (8-bit, no interlace, filter type 0 on every row).

    Example
    -------
    >>> encode_png(np.zeros((2, 2), np.uint8))[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    if pixels.dtype != np.uint8:
        raise InputError(f"encode_png needs uint8 pixels, got {pixels.dtype}; scale to 0..255 first")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 2:
        color_type = 0
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        color_type = 2
    else:
        raise InputError(f"encode_png needs HxW or HxWx3 pixels, got shape {pixels.shape}")
    h, w = pixels.shape[:2]
    if h == 0 or w == 0:
        raise InputError("cannot encode an empty image (zero height or width)")
    rows = np.ascontiguousarray(pixels).reshape(h, -1)
    # Each scanline starts with its filter type byte (0 = None).
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return _PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _finish(rgb_or_grey01: np.ndarray, factor: int | None) -> str:
    """Quantise values in [0, 1] to uint8, upscale, encode, base64."""
    a = np.nan_to_num(rgb_or_grey01, nan=0.0)
    pixels = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    k = _auto_factor(pixels.shape[0], pixels.shape[1], factor)
    if k > 1:
        pixels = pixels.repeat(k, axis=0).repeat(k, axis=1)
    return base64.b64encode(encode_png(pixels)).decode("ascii")


def to_png_b64(image: Any, value_range: tuple[float, float] = (0.0, 1.0), factor: int | None = None) -> str:
    """Base64 PNG of an image given as HxW or CxHxW (C in 1, 3) values in ``value_range``.

    Parameters
    ----------
    image : array-like
        numpy array, torch tensor or nested lists; HxW or CxHxW (HxWxC is accepted too).
    value_range : (low, high)
        Values mapped to black and white; values outside are clipped. Default (0, 1).
    factor : int, optional
        Nearest-neighbour upscaling factor. Default: the smallest integer that makes the longer
        side at least 64 pixels (an 8x8 digit becomes 64x64); 1 keeps the size.

    Returns
    -------
    str
        Base64 text of a PNG file, ready for ``data:image/png;base64,``.

    Example
    -------
    >>> s = to_png_b64(np.eye(8))
    >>> base64.b64decode(s)[:4] == b"\\x89PNG"
    True
    """
    low, high = float(value_range[0]), float(value_range[1])
    if not high > low:
        raise InputError(f"value_range {value_range} needs high > low")
    a = _to_hwc(_as_array(image), "image")
    return _finish((a - low) / (high - low), factor)


# Diverging colormap: blue (negative) - near-white (zero) - red (positive): the five-class RdBu
# scheme from ColorBrewer, which stays readable for the common forms of colour-vision deficiency.
_DIVERGING = np.array(
    [
        [0x21, 0x66, 0xAC],
        [0x67, 0xA9, 0xCF],
        [0xF7, 0xF7, 0xF7],
        [0xEF, 0x8A, 0x62],
        [0xB2, 0x18, 0x2B],
    ],
    dtype=np.float64,
) / 255.0


def _diverging(t: np.ndarray) -> np.ndarray:
    """Map t in [-1, 1] to RGB in [0, 1] by piecewise-linear interpolation of the colormap."""
    pos = (np.clip(t, -1.0, 1.0) + 1.0) / 2.0 * (len(_DIVERGING) - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, len(_DIVERGING) - 2)
    frac = (pos - lo)[..., None]
    return _DIVERGING[lo] * (1.0 - frac) + _DIVERGING[lo + 1] * frac


def heatmap_png_b64(attribution: Any, limit: float | None = None, factor: int | None = None) -> str:
    """Base64 PNG of a signed map (attributions) with a diverging colormap centred on zero.

    Parameters
    ----------
    attribution : array-like
        HxW, or CxHxW which is summed over channels (the usual way to show per-pixel attribution).
    limit : float, optional
        Absolute value shown at full colour; default the map's largest absolute value.
    factor : int, optional
        Upscaling factor, as in :func:`to_png_b64`.

    Example
    -------
    >>> len(heatmap_png_b64(np.linspace(-1, 1, 64).reshape(8, 8))) > 0
    True
    """
    a = _as_array(attribution)
    if a.ndim == 3:
        a = _to_hwc(a, "attribution").sum(axis=2)
    if a.ndim != 2:
        raise InputError(f"attribution has shape {tuple(a.shape)}; give HxW or CxHxW")
    a = np.nan_to_num(a, nan=0.0)
    scale = float(limit) if limit is not None else float(np.abs(a).max())
    t = a / scale if scale > 0 else np.zeros_like(a)
    return _finish(_diverging(t), factor)


def perturbation_scale(delta: Any) -> float:
    """Largest absolute value of a perturbation: what full colour means in its picture."""
    a = np.nan_to_num(_as_array(delta), nan=0.0)
    return float(np.abs(a).max()) if a.size else 0.0


def perturbation_png_b64(delta: Any, factor: int | None = None) -> str:
    """Base64 PNG of a perturbation ``x_adv - x``, amplified so that its largest entry fills the scale.

    A grey (one-channel) perturbation uses the diverging colormap (blue: darker, red: brighter,
    white: unchanged); an RGB one is drawn as ``0.5 + delta / (2 * max|delta|)`` per channel, so mid
    grey means unchanged. Use :func:`perturbation_scale` to caption the amplification.

    Example
    -------
    >>> len(perturbation_png_b64(np.full((8, 8), 0.03))) > 0
    True
    """
    a = _to_hwc(np.nan_to_num(_as_array(delta), nan=0.0), "perturbation")
    scale = float(np.abs(a).max()) if a.size else 0.0
    t = a / scale if scale > 0 else np.zeros_like(a)
    if a.shape[2] == 1:
        return _finish(_diverging(t[:, :, 0]), factor)
    return _finish(0.5 + t / 2.0, factor)


def png_size(png_b64: str) -> tuple[int, int]:
    """(width, height) from a base64 PNG's IHDR chunk; InputError when it is not a PNG."""
    try:
        head = base64.b64decode(png_b64[:64] + "=" * (-len(png_b64[:64]) % 4), validate=True)[:24]
    except (ValueError, TypeError):
        raise InputError("image is not valid base64; give the PNG bytes base64-encoded") from None
    if head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise InputError("image is not a PNG; encode it with assay.images.to_png_b64")
    w, h = struct.unpack(">II", head[16:24])
    return int(w), int(h)
