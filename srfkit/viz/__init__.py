"""Visualisation: feature-map comparison figures and the interactive comparison widget."""

from .detections import detections_figure, draw_instances, samples_figure
from .figures import (
    REDUCTIONS,
    ComparisonPanels,
    compare_level,
    comparison_figure,
    extract_pair,
    plot_comparison,
    reduce_channels,
)
from .widget import FeatureComparison

__all__ = [
    "REDUCTIONS",
    "ComparisonPanels",
    "FeatureComparison",
    "compare_level",
    "detections_figure",
    "draw_instances",
    "samples_figure",
    "comparison_figure",
    "extract_pair",
    "plot_comparison",
    "reduce_channels",
]
