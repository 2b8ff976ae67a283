"""Helpers shared by the reliability probes."""

from __future__ import annotations

import torch

from assay.errors import TargetError


def clean_probs(ctx) -> torch.Tensor:
    """Class probabilities on the audit data from the shared clean scores."""
    s = ctx.clean_scores()
    if ctx.target.output == "logits":
        return torch.softmax(s.double(), dim=1)
    if ctx.target.output == "probs":
        return s.double()
    raise TargetError(f"{ctx.target.name} returns {ctx.target.output}; reliability probes need scores")
