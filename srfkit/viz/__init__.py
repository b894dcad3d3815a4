"""Visualisation: feature-map comparison figures and the interactive comparison widget."""

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
    "comparison_figure",
    "extract_pair",
    "plot_comparison",
    "reduce_channels",
]
