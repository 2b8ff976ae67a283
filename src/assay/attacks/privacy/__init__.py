"""Privacy attacks on model outputs: membership inference scores and the metrics that judge them."""
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
from assay.attacks.privacy.metrics import (
    auc,
    epsilon_lower_bound,
    exposure,
    membership_advantage,
    roc,
    tpr_at_fpr,
)

__all__ = [
    "as_log_probs", "auc", "confidence_scores", "epsilon_lower_bound", "exposure", "image_queries",
    "label_only_scores", "lira_scores", "logit_confidence", "loss_scores", "membership_advantage",
    "rmia_scores", "roc", "tpr_at_fpr", "true_class_log_prob",
]
