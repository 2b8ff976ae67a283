"""A synthetic but real sensitive attribute for the digits demo.

The digits carry no demographic attribute, so the demo derives one from a genuine property of each
image: its stroke thickness. ``ink`` is the total pixel intensity of an image; within each class an
image is ``"thick"`` when its ink is above the class median and ``"thin"`` otherwise (ties at the
median are split at random with ``seed``). Conditioning on the class keeps both groups balanced in
every class, so any accuracy gap between them is about how the model handles stroke width, not
about the class mix. Attach it as ``Dataset(..., groups={"stroke": demo_sensitive_attribute(x, y)})``.
"""

from __future__ import annotations

import numpy as np
import torch

from assay.errors import InputError


def demo_sensitive_attribute(x, y, seed: int = 0) -> np.ndarray:
    """``"thick"`` / ``"thin"`` per image: ink mass above / below its class's median.

    Parameters
    ----------
    x : images ``(n, ...)`` (tensor or array).
    y : class labels ``(n,)``.
    seed : breaks ties at the median.

    Returns
    -------
    numpy array of ``"thick"`` / ``"thin"`` strings, one per image.

    Example
    -------
    >>> import numpy as np
    >>> demo_sensitive_attribute(np.array([[0.1], [0.9], [0.2], [0.8]]), np.array([0, 0, 1, 1])).tolist()
    ['thin', 'thick', 'thin', 'thick']
    """
    xa = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    ya = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    ya = ya.reshape(-1)
    if xa.ndim < 2 or len(xa) != len(ya):
        raise InputError(f"x has shape {xa.shape} for {len(ya)} labels; give one image per label")
    ink = xa.reshape(len(xa), -1).sum(1)
    rng = np.random.default_rng(seed)
    jitter = rng.random(len(ink))  # random order among exact ties
    thick = np.zeros(len(ink), bool)
    for c in np.unique(ya):  # a loop over classes (10), not samples
        idx = np.flatnonzero(ya == c)
        order = idx[np.lexsort((jitter[idx], ink[idx]))]
        thick[order[len(order) // 2:]] = True
    return np.where(thick, "thick", "thin")
