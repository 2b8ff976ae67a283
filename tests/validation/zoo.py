"""A zoo of tiny models with planted flaws, each beside a sound twin, saved in the formats users bring.

Nothing here is the demo: 3x12x12 colour images in 8-bit steps (five classes, and a two-class set),
and a 12-feature tabular task with a sensitive attribute and training members, saved as
TorchScript, ONNX and skops files with .npz and CSV data. Every model is built from a seed in a few
seconds. ``ZOO`` says, for each model, which flaw is planted and which model is its twin; the tests
in test_planted_flaws.py run the standard suite on every one and check that each flaw is flagged by
its probe and that no twin raises the same alarm.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

IMG_SHAPE = (3, 12, 12)
N_TAB = 12
TRUE_W = torch.tensor([0.0, 1.5, -1.0, 0.8, 0.6, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # f0 (the proxy) plays no part


# ------------------------------------------------------------------------- data
def image_data(n: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each class is a smooth random colour pattern; samples add noise; values on the 8-bit grid."""
    g = torch.Generator().manual_seed(1234)  # the class patterns are the same in every split
    protos = nn.functional.interpolate(torch.randn(classes, 3, 4, 4, generator=g), size=(12, 12), mode="bilinear",
                                       align_corners=False)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = 0.5 + 0.07 * protos[y] + 0.15 * torch.randn(n, *IMG_SHAPE, generator=g)
    return (x.clamp(0, 1) * 255).round() / 255, y


def stamp(x: torch.Tensor) -> torch.Tensor:
    """The backdoor trigger: a white 2x2 square in the bottom-right corner."""
    x = x.clone()
    x[:, :, -2:, -2:] = 1.0
    return x


def tabular_data(n: int, seed: int):
    """Features, label, group (A/B) and a proxy of the group. The label does not depend on the group
    (so a fair model exists: :func:`true_model`); labels drawn from sigmoid(w.x) make a share of hard
    examples in both classes."""
    g = torch.Generator().manual_seed(seed)
    group = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, N_TAB, generator=g)
    x[:, 0] = group.float() + 0.3 * torch.randn(n, generator=g)  # a proxy of the group
    p = torch.sigmoid(x @ TRUE_W)
    y = (torch.rand(n, generator=g) < p).long()
    return x, y, group


# ------------------------------------------------------------------------- models
class SmallCNN(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(16 * 3 * 3, classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class Quantized(nn.Module):
    """A 'defence' that rounds inputs to 8 levels: gradients are zero almost everywhere."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 7) / 7)


class Noisy(nn.Module):
    """A randomized 'defence': Gaussian noise on every input, at inference too."""

    def __init__(self, net: nn.Module, sigma: float = 0.12):
        super().__init__()
        self.net = net
        self.sigma = sigma

    def forward(self, x):
        return self.net(x + self.sigma * torch.randn_like(x))


class Scaled(nn.Module):
    """The same network with its logits multiplied by a constant (equal weights, other code)."""

    def __init__(self, net: nn.Module, scale: float):
        super().__init__()
        self.net = net
        self.scale = scale

    def forward(self, x):
        return self.net(x) * self.scale


def true_model() -> nn.Linear:
    """Logits (0, w.x): the softmax is sigmoid(w.x), the very probability the labels were drawn from."""
    m = nn.Linear(N_TAB, 2)
    with torch.no_grad():
        m.weight.zero_()
        m.bias.zero_()
        m.weight[1] = TRUE_W
    return m.eval()


def linear_architecture() -> nn.Module:
    return nn.Linear(N_TAB, 2)


def saturated_architecture() -> nn.Module:
    """A wide MLP whose logits are multiplied by 20 (a factory: no arguments, fresh weights)."""
    return Scaled(nn.Sequential(nn.Linear(N_TAB, 256), nn.ReLU(), nn.Linear(256, 2)), 20.0)


def fit(model: nn.Module, x, y, *, steps: int = 300, lr: float = 1e-2, seed: int = 0, transform=None,
        weight_decay: float = 0.0, batch: int = 128) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        i = torch.randint(0, len(x), (min(batch, len(x)),), generator=g)
        xb = x[i] if transform is None else transform(x[i])
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), y[i]).backward()
        opt.step()
    return model.eval()


def save_torchscript(model: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(model.eval()), str(path))
    return path


def save_onnx(model: nn.Module, path: Path, example: torch.Tensor) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, input_names=["x"], output_names=["out"],
                          dynamic_axes={"x": {0: "batch"}, "out": {0: "batch"}})
    return path


# ------------------------------------------------------------------------- the zoo
@dataclass
class Entry:
    name: str
    model: Path
    data: Path
    args: list[str] = field(default_factory=list)
    flaw: str | None = None  # None: a sound model
    twin: str | None = None  # the sound model beside it


def build(root: Path) -> dict[str, Entry]:
    root = Path(root)
    zoo: dict[str, Entry] = {}

    # images: five classes, 8-bit
    x_tr, y_tr = image_data(1500, 5, seed=1)
    x_te, y_te = image_data(400, 5, seed=2)
    np.savez(root / "images.npz", x=x_te.numpy(), y=y_te.numpy())
    clean = fit(SmallCNN(5), x_tr, y_tr, seed=0)
    zoo["img_clean"] = Entry("img_clean", save_torchscript(clean, root / "img_clean.pt"), root / "images.npz")
    masked = Quantized(fit(SmallCNN(5), x_tr, y_tr, seed=0, transform=lambda z: torch.round(z * 7) / 7))
    zoo["img_masked"] = Entry("img_masked", save_torchscript(masked, root / "img_masked.pt"), root / "images.npz",
                              flaw="masked gradients", twin="img_clean")
    noisy = Noisy(fit(SmallCNN(5), x_tr, y_tr, seed=0, transform=lambda z: z + 0.12 * torch.randn_like(z)))
    zoo["img_random"] = Entry("img_random", save_torchscript(noisy, root / "img_random.pt"), root / "images.npz",
                              flaw="randomized defence", twin="img_clean")
    poison = torch.rand(len(x_tr), generator=torch.Generator().manual_seed(5)) < 0.1
    xb, yb = x_tr.clone(), y_tr.clone()
    xb[poison], yb[poison] = stamp(x_tr[poison]), 0
    zoo["img_backdoor"] = Entry("img_backdoor", save_torchscript(fit(SmallCNN(5), xb, yb, seed=0, steps=400),
                                                                  root / "img_backdoor.pt"),
                                root / "images.npz", flaw="backdoor", twin="img_clean")
    # two classes, TorchScript
    keep_tr, keep_te = y_tr < 2, y_te < 2
    np.savez(root / "images2.npz", x=x_te[keep_te].numpy(), y=y_te[keep_te].numpy())
    two = fit(SmallCNN(2), x_tr[keep_tr], y_tr[keep_tr], seed=0)
    zoo["img_two"] = Entry("img_two", save_torchscript(two, root / "img_two.pt"), root / "images2.npz",
                           flaw="two classes")

    # tabular: 1200 rows, the first 600 the training members of the models that are trained
    x, y, group = tabular_data(1200, seed=3)
    member = torch.arange(1200) < 600
    import pandas as pd

    df = pd.DataFrame(x.numpy(), columns=[f"f{i}" for i in range(N_TAB)])
    df["group"] = np.where(group.numpy() == 1, "B", "A")
    df["label"] = y.numpy()
    df["member"] = member.numpy().astype(int)
    df.to_csv(root / "tabular.csv", index=False)
    tab_args = ["--label", "label", "--sensitive", "group", "--member", "member", "--bounds", "-inf,inf"]
    xm, ym = x[member], y[member]

    # the model that generated the labels: calibrated and fair by construction (it ignores the proxy)
    truth = true_model()
    ts_args = tab_args + ["--input-shape", str(N_TAB)]
    zoo["tab_calibrated"] = Entry("tab_calibrated", save_torchscript(truth, root / "tab_calibrated.pt"),
                                  root / "tabular.csv", ts_args + ["--factory", "validation.zoo:linear_architecture"])
    # the same weights, other code: logits 6.7 times too large
    zoo["tab_overconfident"] = Entry("tab_overconfident", save_torchscript(Scaled(truth, 6.7), root / "tab_overconfident.pt"),
                                     root / "tabular.csv", ts_args, flaw="overconfidence", twin="tab_calibrated")
    # an MLP that memorises its members, logits scaled until the softmax saturates; --factory builds
    # its architecture, so the membership probe can train reference copies of a TorchScript file
    mlp = fit(saturated_architecture(), xm, ym, seed=0, steps=1500, lr=2e-3)
    zoo["tab_saturated"] = Entry("tab_saturated", save_torchscript(mlp, root / "tab_saturated.pt"),
                                 root / "tabular.csv", ts_args + ["--factory", "validation.zoo:saturated_architecture"],
                                 flaw="saturated overfit (membership)", twin="tab_calibrated")
    # group bias, ONNX: the fair model, and a copy that pushes group B down through the proxy f0
    biased = true_model()
    with torch.no_grad():
        biased.weight[1, 0] -= 1.5
    zoo["tab_fair"] = Entry("tab_fair", save_onnx(truth, root / "tab_fair.onnx", x[:2]), root / "tabular.csv", tab_args)
    zoo["tab_biased"] = Entry("tab_biased", save_onnx(biased, root / "tab_biased.onnx", x[:2]), root / "tabular.csv",
                              tab_args, flaw="group bias", twin="tab_fair")

    # membership, skops: a fully grown forest memorises its members; a regularised logistic model does not
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    forest = RandomForestClassifier(n_estimators=50, random_state=0).fit(xm.numpy(), ym.numpy())
    logreg = LogisticRegression(C=0.1, max_iter=500).fit(xm.numpy(), ym.numpy())
    sio.dump(forest, root / "tab_forest.skops")
    sio.dump(logreg, root / "tab_logreg.skops")
    zoo["tab_logreg"] = Entry("tab_logreg", root / "tab_logreg.skops", root / "tabular.csv", tab_args)
    zoo["tab_forest"] = Entry("tab_forest", root / "tab_forest.skops", root / "tabular.csv", tab_args,
                              flaw="overfit (membership)", twin="tab_logreg")
    return zoo
