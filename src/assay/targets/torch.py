"""White-box PyTorch target."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from assay.errors import InputError, TargetError
from assay.targets.base import GRADIENTS, LABELS, SCORES, Target


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"device {device!r} is not a torch device; use --device auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device}: this torch build or machine has no CUDA device; use --device cpu or auto")
    return dev


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, so attacks work in the data's natural value range."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], ndim: int):
        super().__init__()
        shape = (1, -1) + (1,) * max(ndim - 1, 0)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(shape))

    def forward(self, x):
        return (x - self.mean) / self.std


class _Counted(nn.Module):
    """Wraps the model so that every forward pass, gradient ones included, is counted and budgeted."""

    def __init__(self, inner: nn.Module, target: TorchTarget):
        super().__init__()
        self.inner = inner
        self._target = [target]  # list: keep the target out of the module tree

    def forward(self, x):
        t = self._target[0]
        t.budget.charge(x.shape[0])
        return self.inner(x.to(t.device))

    def with_inner(self, inner: nn.Module) -> _Counted:
        """The same counting around another module (e.g. an inference-optimised copy)."""
        return _Counted(inner, self._target[0])

    @property
    def inner_device(self) -> torch.device:
        return self._target[0].device

    def __deepcopy__(self, memo):
        # A copy (e.g. the randomized model of a sanity check) gets its own weights but stays counted
        # against the same target; the target itself (locks, clients) is shared, never copied.
        import copy

        return _Counted(copy.deepcopy(self.inner, memo), self._target[0])


class TorchTarget(Target):
    """An ``nn.Module`` returning logits, queried on inputs in ``bounds``.

    Normalization is explicit: pass ``mean``/``std`` (per channel, in input units) and the target
    applies it inside the differentiable module, so attacks and budgets (eps) are in the input's
    natural scale (e.g. pixels in [0, 1]). The model is always used in eval mode.

    Example
    -------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> t = TorchTarget(net, input_shape=(4,), num_classes=3)
    >>> t.scores(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    """

    kind = "torch"
    output = "logits"

    def __init__(
        self,
        model: nn.Module,
        *,
        input_shape: Sequence[int],
        num_classes: int | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: str | torch.device | None = "auto",
        query_budget: int | None = None,
        batch_size: int = 256,
        name: str | None = None,
    ):
        if not isinstance(model, nn.Module):
            raise TargetError(f"expected a torch.nn.Module, got {type(model).__name__}")
        self._device = pick_device(device)
        net = model
        if (mean is None) != (std is None):
            raise TargetError("give both mean and std for normalization, or neither")
        if mean is not None:
            if any(s <= 0 for s in std):
                raise TargetError("normalization std must be positive")
            net = nn.Sequential(Normalize(mean, std, len(input_shape)), model)
        self.net = net.to(self._device).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        if num_classes is None:
            with torch.no_grad():
                num_classes = self.net(torch.zeros(1, *input_shape, device=self._device)).shape[1]
        # a model gradients do not reach (a dynamically quantized one: its int8 kernels have no
        # backward) must not be attacked white-box: the attacks would see no gradient and "fail"
        self.no_gradients = _gradient_check(self.net, tuple(input_shape), self._device)
        super().__init__(
            num_classes=num_classes,
            input_shape=tuple(input_shape),
            bounds=bounds,
            capabilities={SCORES, LABELS} | (set() if self.no_gradients else {GRADIENTS}),
            query_budget=query_budget,
            batch_size=batch_size,
            name=name or type(model).__name__,
        )
        self.mean, self.std = mean, std
        self._module = _Counted(self.net, self)
        self._digest: str | None = None

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def module(self) -> nn.Module:
        """Differentiable, counted model on input space (normalization included), in eval mode."""
        return self._module

    @torch.no_grad()
    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self._device)).float().cpu()

    def content_digest(self) -> str:
        if self._digest is None:  # the weights are frozen for the audit: compute once
            from assay.targets.identity import module_digest

            self._digest = module_digest(self.net)
        return self._digest

    def describe(self):
        d = super().describe()
        d.update(device=str(self._device), mean=self.mean, std=self.std)
        if self.no_gradients:
            d["no_gradients"] = self.no_gradients
        return d


def _gradient_check(net: nn.Module, input_shape: tuple[int, ...], device) -> str | None:
    """Why no gradient reaches the input of ``net`` (None when one does): one backward pass."""
    import warnings

    x = torch.zeros(1, *input_shape, device=device, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            net(x).float().sum().backward()
        except Exception as e:  # noqa: BLE001 - any failure means: no usable gradients
            return f"backward pass failed ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    if x.grad is not None:
        return None
    ops = sorted({str(w.message).split(": ", 1)[0] for w in caught if "autograd kernel" in str(w.message)})
    return (f"{', '.join(ops)} has no gradient" if ops else "no gradient reaches the input") + \
        " (e.g. a dynamically quantized model); white-box probes are skipped, black-box ones still run"
