"""Evidence helpers shared by the robustness probes."""

from __future__ import annotations

import torch

from assay.findings import Evidence


def example_images(x: torch.Tensor, x_adv: torch.Tensor, y, pred_adv, idx, bounds, title: str) -> Evidence | None:
    """Original | adversarial | amplified perturbation for a few broken points (images only)."""
    if x.dim() != 4 or len(idx) == 0:
        return None
    from assay.images import perturbation_png_b64, to_png_b64

    lo, hi = bounds
    rows = []
    for i in idx:
        orig = ((x[i] - lo) / (hi - lo)).clamp(0, 1)
        adv = ((x_adv[i] - lo) / (hi - lo)).clamp(0, 1)
        rows.append({
            "caption": f"true {int(y[i])} -> predicted {int(pred_adv[i])}",
            "images": [
                {"label": "original", "png": to_png_b64(orig.numpy())},
                {"label": "adversarial", "png": to_png_b64(adv.numpy())},
                {"label": "perturbation", "png": perturbation_png_b64((adv - orig).numpy())},
            ],
        })
    return Evidence("images", title, {"rows": rows})
