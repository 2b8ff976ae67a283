import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def demo():
    """The demo CNN and its data splits, trained once per test session (about 6 s)."""
    from assay.data.demo import train_demo_model

    model, splits = train_demo_model(seed=0)
    return model, splits


@pytest.fixture(scope="session")
def demo_target(demo):
    from assay.targets import TorchTarget

    model, _ = demo
    return TorchTarget(model, input_shape=(1, 8, 8), num_classes=10, device="cpu")
