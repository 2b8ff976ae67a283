"""Training recipes with guarantees: differentially private training through Opacus."""

from assay.train.dp import DPTrainingResult, default_delta, train_dp

__all__ = ["DPTrainingResult", "default_delta", "train_dp"]
