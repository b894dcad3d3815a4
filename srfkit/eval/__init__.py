"""Evaluation: COCO AP through pycocotools, feature fidelity, parameters and latency."""

from .coco_eval import METRIC_NAMES, coco_evaluate, predictions_to_coco, summarize
from .cost import cost, count_parameters
from .fidelity import feature_fidelity, fidelity_metrics

__all__ = [
    "METRIC_NAMES",
    "coco_evaluate",
    "cost",
    "count_parameters",
    "feature_fidelity",
    "fidelity_metrics",
    "predictions_to_coco",
    "summarize",
]
