"""The demo: scikit-learn's handwritten digits (shipped with scikit-learn, no download) and a small
CNN trained on them, deterministically from a seed in well under a minute on 2 CPU cores.

Images are 1x8x8 with pixel values scaled from 0..16 to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from assay.train.classifier import train_classifier  # noqa: F401  (also imported from here by the arena)


class DigitsCNN(nn.Module):
    """Two 3x3 conv layers, max-pool, two linear layers: 1x8x8 -> 10 logits."""

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 16, 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def build_demo_model(num_classes: int = 10) -> nn.Module:
    """Factory for ``--factory assay.data.demo:build_demo_model`` (safetensors weights)."""
    return DigitsCNN(num_classes)


@dataclass
class DemoSplits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_splits(seed: int = 0, n_train: int = 1000) -> DemoSplits:
    """The 1797 digits, shuffled with ``seed``: ``n_train`` for training, the rest held out."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(x))
    x, y = x[perm], y[perm]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return DemoSplits(t(x[:n_train]), t(y[:n_train]), t(x[n_train:]), t(y[n_train:]))


def train_demo_model(seed: int = 0, epochs: int = 30) -> tuple[nn.Module, DemoSplits]:
    """The demo CNN, trained on the first 1000 shuffled digits. About 98% test accuracy."""
    torch.manual_seed(seed)
    splits = load_digits_splits(seed)
    model = DigitsCNN()
    with torch.random.fork_rng():
        train_classifier(model, splits.x_train, splits.y_train, epochs=epochs, seed=seed)
    return model, splits


def write_demo(out_dir, seed: int = 0):
    """Train the demo model and write ``model.safetensors`` (architecture: build_demo_model) and
    ``digits.npz``: the audit data, 400 training members and all held-out digits, shuffled, with a
    ``member`` mask (privacy) and the documented sensitive attribute ``stroke`` (fairness)."""
    from pathlib import Path

    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, s = train_demo_model(seed)
    model_path = out / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(model_path))
    x = torch.cat([s.x_train[:400], s.x_test])
    y = torch.cat([s.y_train[:400], s.y_test])
    member = torch.cat([torch.ones(400, dtype=torch.bool), torch.zeros(len(s.x_test), dtype=torch.bool)])
    perm = torch.from_numpy(np.random.default_rng(seed + 1).permutation(len(x)))
    from assay.data.demo_fairness import demo_sensitive_attribute

    x, y, member = x[perm], y[perm], member[perm]
    arrays = {"x": x.numpy(), "y": y.numpy(), "member": member.numpy(),
              # documented synthetic sensitive attribute: stroke thickness (docs/fairness.md)
              "group_stroke": demo_sensitive_attribute(x, y, seed=seed)}
    data_path = out / "digits.npz"
    np.savez_compressed(data_path, **arrays)
    return model_path, data_path
