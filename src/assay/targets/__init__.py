"""How assay talks to a model: one module per kind of access."""
from assay.targets.base import GENERATE, GRADIENTS, LABELS, SCORES, QueryBudget, Target
from assay.targets.torch import TorchTarget

__all__ = ["GENERATE", "GRADIENTS", "LABELS", "SCORES", "QueryBudget", "Target", "TorchTarget"]
