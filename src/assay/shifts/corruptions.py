"""Common corruptions at severities 1-5, tensor-native and batched.

Severity parameters follow the CIFAR-10-C benchmark (Hendrycks & Dietterich, ICLR 2019), whose
small images match the scale assay usually audits. All functions take images ``(N, C, H, W)`` with
values in ``bounds`` and return corrupted images in the same range.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SEVERITIES = (1, 2, 3, 4, 5)

_NOISE_SIGMA = (0.04, 0.06, 0.08, 0.09, 0.10)
_BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)
_CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)
_BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)
_JPEG_QUALITY = (80, 65, 58, 50, 40)
_PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)

# The JPEG standard's luminance quantization table (ITU-T T.81, Annex K).
_JPEG_Q = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99],
], dtype=torch.float32)


def _to01(x, bounds):
    lo, hi = bounds
    return (x - lo) / (hi - lo)


def _from01(x, bounds):
    lo, hi = bounds
    return x.clamp(0, 1) * (hi - lo) + lo


def gaussian_noise(x, severity, bounds=(0.0, 1.0), generator=None):
    z = _to01(x, bounds)
    noise = torch.randn(z.shape, generator=generator, dtype=z.dtype) * _NOISE_SIGMA[severity - 1]
    return _from01(z + noise.to(z.device), bounds)


def gaussian_blur(x, severity, bounds=(0.0, 1.0), generator=None):
    sigma = _BLUR_SIGMA[severity - 1]
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    z = _to01(x, bounds)
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    if pad < radius:  # tiny images: reflect padding cannot exceed the image, fall back to replicate
        z = F.pad(z, (radius, radius, radius, radius), mode="replicate")
    else:
        z = F.pad(z, (radius, radius, radius, radius), mode="reflect")
    z = F.conv2d(z, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    z = F.conv2d(z, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return _from01(z, bounds)


def contrast(x, severity, bounds=(0.0, 1.0), generator=None):
    z = _to01(x, bounds)
    mean = z.mean(dim=(1, 2, 3), keepdim=True)
    return _from01((z - mean) * _CONTRAST[severity - 1] + mean, bounds)


def brightness(x, severity, bounds=(0.0, 1.0), generator=None):
    """Additive shift of intensity (the V channel of HSV for RGB; intensity for grayscale)."""
    z = _to01(x, bounds)
    c = _BRIGHTNESS[severity - 1]
    if z.shape[1] == 3:
        v = z.amax(dim=1, keepdim=True)
        scale = ((v + c).clamp(0, 1) / v.clamp_min(1e-6))
        return _from01(z * scale, bounds)
    return _from01(z + c, bounds)


def _dct_matrix(n: int, dtype, device) -> torch.Tensor:
    k = torch.arange(n, dtype=dtype, device=device)
    m = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m  # orthonormal DCT-II


def jpeg(x, severity, bounds=(0.0, 1.0), generator=None):
    """JPEG-like compression: 8x8 block DCT, quantization with the standard luminance table scaled
    to the severity's quality (IJG scaling), reconstruction. Per channel, no chroma subsampling."""
    q = _JPEG_QUALITY[severity - 1]
    scale = 5000 / q if q < 50 else 200 - 2 * q
    table = ((_JPEG_Q * scale + 50) // 100).clamp(min=1).to(x.device, x.dtype)
    z = _to01(x, bounds) * 255 - 128
    n, c, h, w = z.shape
    ph, pw = (-h) % 8, (-w) % 8
    z = F.pad(z, (0, pw, 0, ph), mode="replicate")
    H, W = z.shape[-2:]
    blocks = z.reshape(n, c, H // 8, 8, W // 8, 8).permute(0, 1, 2, 4, 3, 5)
    d = _dct_matrix(8, x.dtype, x.device)
    coef = d @ blocks @ d.T
    coef = torch.round(coef / table) * table
    rec = d.T @ coef @ d
    rec = rec.permute(0, 1, 2, 4, 3, 5).reshape(n, c, H, W)[..., :h, :w]
    return _from01((torch.round(rec + 128).clamp(0, 255)) / 255, bounds)


def pixelate(x, severity, bounds=(0.0, 1.0), generator=None):
    h, w = x.shape[-2:]
    f = _PIXELATE[severity - 1]
    small = (max(1, int(h * f)), max(1, int(w * f)))
    z = F.interpolate(x, size=small, mode="area")
    return F.interpolate(z, size=(h, w), mode="nearest").clamp(*bounds)


CORRUPTIONS = {
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "brightness": brightness,
    "jpeg": jpeg,
    "pixelate": pixelate,
}


def corrupt(x: torch.Tensor, name: str, severity: int, bounds=(0.0, 1.0), generator=None) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (1-5) to a batch of images."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1-5, got {severity}")
    if x.dim() != 4:
        raise ValueError("corruptions need images shaped (N, C, H, W)")
    return CORRUPTIONS[name](x, severity, bounds, generator)
