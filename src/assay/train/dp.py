"""Differentially private training (DP-SGD) through Opacus, with the privacy actually spent.

DP-SGD (Abadi et al. 2016) clips every per-sample gradient to ``max_grad_norm``, adds Gaussian
noise of standard deviation ``noise_multiplier * max_grad_norm`` to their sum, and samples each
batch by Poisson sampling (each record independently with probability ``sample_rate``). Opacus'
accountant turns (noise_multiplier, sample_rate, steps) into the (epsilon, delta) guarantee.

Seeding: Opacus' ``secure_mode`` is off (it would need a cryptographic RNG and cannot be seeded),
so runs are reproducible from ``seed``: the torch seed, the Poisson sampler's generator and the
noise generator are all derived from it. Reproducible noise is fine for research and audits; for a
production release whose noise must be unpredictable, train with Opacus' secure mode instead.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from assay.errors import InputError

ACCOUNTANTS = ("rdp", "prv")
OPTIMIZERS = ("sgd", "adam")


def default_delta(n: int) -> float:
    """The default delta for ``n`` training records: ``min(1e-5, n ** -1.1)``.

    delta is the probability that the epsilon guarantee fails outright, so it must be well below
    ``1/n`` (a mechanism that publishes one random record in full is (0, 1/n)-DP). ``n ** -1.1`` is
    always strictly below ``1/n``; 1e-5 is the customary cap for data sets up to ~35,000 records.

    >>> default_delta(1000), round(default_delta(10**6), 10)
    (1e-05, 2.512e-07)
    """
    if n < 1:
        raise InputError(f"training set has {n} records; give at least one")
    return min(1e-5, float(n) ** -1.1)


@dataclass
class DPTrainingResult:
    """A DP-trained model and its privacy guarantee.

    ``epsilon_spent`` is Opacus' accountant's epsilon at ``delta`` after ``steps`` noisy steps with
    Poisson ``sample_rate`` and ``noise_multiplier``: the model is (epsilon_spent, delta)-DP with
    respect to adding or removing one training record.
    """

    model: nn.Module
    epsilon_spent: float
    delta: float
    noise_multiplier: float
    steps: int
    sample_rate: float
    max_grad_norm: float = 1.0
    epochs: int = 0
    batch_size: int = 0
    lr: float = 0.0
    optimizer: str = "sgd"
    accountant: str = "rdp"
    seed: int = 0
    n_train: int = 0
    target_epsilon: float | None = None

    def settings(self) -> dict:
        """Everything but the model, JSON-ready (written as ``dp.json`` by ``assay train --dp``)."""
        d = asdict(self)
        d.pop("model")
        return d


def _check_module(model: nn.Module) -> None:
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        kinds = sorted({type(e).__name__ for e in errors})
        first = str(errors[0]).strip().splitlines()[0]
        raise InputError(
            f"model is not DP-trainable ({', '.join(kinds)}: {first}); replace BatchNorm with GroupNorm "
            "or LayerNorm (opacus.validators.ModuleValidator.fix(model) does it) and train again"
        )


def train_dp(
    model: nn.Module | Callable[[], nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epsilon: float | None = None,
    noise_multiplier: float | None = None,
    delta: float | None = None,
    max_grad_norm: float = 1.0,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 0.5,
    optimizer: str = "sgd",
    seed: int = 0,
    accountant: str = "rdp",
) -> DPTrainingResult:
    """Train a classifier with DP-SGD (Opacus) and report the (epsilon, delta) spent.

    Parameters
    ----------
    model : an ``nn.Module`` returning logits (deep-copied, the argument is not modified) or a
        zero-argument factory building one. Layers that mix samples (BatchNorm) are refused.
    x, y : training inputs (float) and int64 labels.
    epsilon : target epsilon: the noise multiplier is calibrated so that ``epochs`` epochs spend
        at most this (Opacus ``make_private_with_epsilon``). Give exactly one of ``epsilon`` and
        ``noise_multiplier``.
    noise_multiplier : Gaussian noise std relative to ``max_grad_norm`` (Opacus ``make_private``).
    delta : the delta of the guarantee; default :func:`default_delta` of ``len(x)``.
    max_grad_norm : per-sample gradient clipping bound C.
    epochs, batch_size, lr : ``sample_rate = batch_size / len(x)`` (expected batch size under
        Poisson sampling); ``steps = epochs * ceil(len(x) / batch_size)``.
    optimizer : ``"sgd"`` (plain SGD, the DP-SGD of the paper) or ``"adam"`` (DP-Adam; same
        privacy, post-processing of the noisy gradients).
    seed : drives initialisation (factory), the Poisson sampler and the noise (secure_mode off).
    accountant : ``"rdp"`` (Renyi DP, Mironov 2017) or ``"prv"`` (privacy random variables,
        Gopi et al. 2021; tighter).

    Returns
    -------
    DPTrainingResult with the trained model in eval mode, a plain ``nn.Module`` (no Opacus
    wrapper or hooks; its ``state_dict`` has the original keys).

    Example
    -------
    >>> x = torch.randn(200, 5); y = (x[:, 0] > 0).long()
    >>> r = train_dp(nn.Linear(5, 2), x, y, noise_multiplier=1.0, epochs=2, batch_size=50)
    >>> r.steps, r.sample_rate, 0 < r.epsilon_spent < 10, r.model.training
    (8, 0.25, True, False)
    """
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    if (epsilon is None) == (noise_multiplier is None):
        raise InputError("give exactly one of epsilon (target) and noise_multiplier")
    if epsilon is not None and not (epsilon > 0 and math.isfinite(epsilon)):
        raise InputError(f"epsilon={epsilon}; the target epsilon must be a positive finite number")
    if noise_multiplier is not None and not noise_multiplier > 0:
        raise InputError(f"noise_multiplier={noise_multiplier}; it must be > 0 (0 is not private)")
    if accountant not in ACCOUNTANTS:
        raise InputError(f"unknown accountant {accountant!r}; use one of {', '.join(ACCOUNTANTS)}")
    if optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    if not max_grad_norm > 0 or epochs < 1 or batch_size < 1 or not lr > 0:
        raise InputError("max_grad_norm and lr must be > 0, epochs and batch_size >= 1")
    x = torch.as_tensor(x).float()
    y = torch.as_tensor(y).long().reshape(-1)
    n = len(x)
    if n == 0 or len(y) != n:
        raise InputError(f"{n} inputs and {len(y)} labels; give one label per input, at least one record")
    if batch_size > n:
        raise InputError(f"batch_size={batch_size} exceeds the {n} training records; lower it")
    delta = default_delta(n) if delta is None else float(delta)
    if not 0 < delta < 1:
        raise InputError(f"delta={delta}; it must lie in (0, 1), well below 1/n")

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = model() if not isinstance(model, nn.Module) else copy.deepcopy(model)
        if not isinstance(module, nn.Module):
            raise InputError(f"the model factory returned {type(module).__name__}; it must return an nn.Module")
        _check_module(module)
        plain = copy.deepcopy(module)  # the hook-free copy the trained weights are loaded into
        module.train()
        opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(module.parameters(), lr=lr)
        loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        with warnings.catch_warnings():
            # Opacus warns about secure_mode being off: documented above, a deliberate choice
            warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
            warnings.filterwarnings("ignore", message=".*full_backward_hook.*")
            engine = PrivacyEngine(accountant=accountant, secure_mode=False)
            common = dict(module=module, optimizer=opt, data_loader=loader, max_grad_norm=max_grad_norm,
                          poisson_sampling=True, noise_generator=torch.Generator().manual_seed(seed + 1))
            if epsilon is not None:
                gsm, dp_opt, dp_loader = engine.make_private_with_epsilon(
                    target_epsilon=epsilon, target_delta=delta, epochs=epochs, **common)
            else:
                gsm, dp_opt, dp_loader = engine.make_private(noise_multiplier=noise_multiplier, **common)
            loss_fn = nn.CrossEntropyLoss()
            for _ in range(epochs):
                for xb, yb in dp_loader:
                    dp_opt.zero_grad()
                    loss_fn(gsm(xb), yb).backward()
                    dp_opt.step()
        spent = float(engine.get_epsilon(delta))
        steps = _accountant_steps(engine.accountant)
        sample_rate = float(dp_loader.sample_rate)
        plain.load_state_dict(_unwrapped_state(gsm))
    return DPTrainingResult(
        model=plain.eval(), epsilon_spent=spent, delta=delta, noise_multiplier=float(dp_opt.noise_multiplier),
        steps=steps, sample_rate=sample_rate, max_grad_norm=float(max_grad_norm), epochs=epochs,
        batch_size=batch_size, lr=float(lr), optimizer=optimizer, accountant=accountant, seed=seed, n_train=n,
        target_epsilon=None if epsilon is None else float(epsilon),
    )


def _unwrapped_state(gsm: nn.Module) -> dict[str, torch.Tensor]:
    inner = getattr(gsm, "_module", gsm)
    return {k: v.detach().clone() for k, v in inner.state_dict().items()}


def _accountant_steps(acc) -> int:
    """Noisy steps the accountant recorded (its history is [(noise, sample_rate, steps), ...])."""
    return int(sum(h[-1] for h in getattr(acc, "history", [])))
