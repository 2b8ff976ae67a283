"""Privacy attacks on model outputs: membership inference scores (the metrics that judge them are
in :mod:`assay.metrics.privacy`)."""
from assay.attacks.privacy.membership import (
    as_log_probs,
    confidence_scores,
    image_queries,
    label_only_scores,
    lira_scores,
    logit_confidence,
    loss_scores,
    rmia_scores,
    true_class_log_prob,
)

__all__ = [
    "as_log_probs", "confidence_scores", "image_queries", "label_only_scores", "lira_scores", "logit_confidence",
    "loss_scores", "rmia_scores", "true_class_log_prob",
]
