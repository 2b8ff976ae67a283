"""Per-sample attack losses on logits, written so that the attacker always *maximises* them.

- ``ce_loss``: cross-entropy of the true class (untargeted).
- ``ce_targeted_loss``: minus the cross-entropy of the target class.
- ``dlr_loss``: Difference of Logits Ratio (Croce & Hein, ICML 2020, eq. 4), shift- and
  scale-invariant in the logits, so it is not fooled by saturated softmax outputs:
  ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` with ``z_pi`` the logits sorted in decreasing order.
- ``dlr_targeted_loss``: targeted DLR (eq. 5): ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``.
- ``margin_loss``: the DLR numerator alone, ``-(z_y - max_{i != y} z_i)``: what DLR becomes where its
  denominator is undefined (fewer than 3 classes); like DLR it is not flattened by a saturated softmax.

Every loss takes ``(logits, y, y_target)`` and returns a float tensor (N,).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from assay.errors import InputError

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

_DLR_DENOM_EPS = 1e-12  # the reference's guard against a zero logit gap


def ce_loss(logits: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor | None = None) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def ce_targeted_loss(logits: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy(logits, y_target, reduction="none")


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor | None = None) -> torch.Tensor:
    top3 = logits.topk(3, dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    z_other = others.amax(dim=1)
    return -(z_y - z_other) / (top3[:, 0] - top3[:, 2] + _DLR_DENOM_EPS)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
    top4 = logits.topk(4, dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, y_target[:, None]).squeeze(1)
    return -(z_y - z_t) / (top4[:, 0] - 0.5 * (top4[:, 2] + top4[:, 3]) + _DLR_DENOM_EPS)


def margin_loss(logits: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor | None = None) -> torch.Tensor:
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    return -(z_y - logits.scatter(1, y[:, None], float("-inf")).amax(dim=1))


def make_loss(name: str, *, targeted: bool, num_classes: int) -> LossFn:
    """The loss named ``name`` ("ce", "dlr" or "margin") in its untargeted or targeted form."""
    if name == "margin" and not targeted:
        return margin_loss
    if name not in ("ce", "dlr"):
        raise InputError(f"unknown loss {name!r}; use 'ce', 'dlr' or (untargeted) 'margin'")
    if name == "dlr":
        needed = 4 if targeted else 3
        if num_classes < needed:
            raise InputError(
                f"the {'targeted ' if targeted else ''}DLR loss needs at least {needed} classes, "
                f"the model has {num_classes}; use loss='ce'"
            )
        return dlr_targeted_loss if targeted else dlr_loss
    return ce_targeted_loss if targeted else ce_loss
