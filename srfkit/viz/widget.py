"""The feature-comparison widget (ipywidgets + matplotlib).

``FeatureComparison(extractor, upsamplers, images)`` shows, for a chosen image, FPN level and
channel-or-reduction, every upsampler's output beside the target features F(I_tr) and the absolute
error maps, with the fidelity figures (L1, PSNR, cosine) of the current choice.

The logic is plain Python: :meth:`FeatureComparison.panels` returns the arrays for the current
state, :meth:`FeatureComparison.static_figure` draws them as a matplotlib figure (the static site
shows that, since Python callbacks do not run there), and the widget only renders that figure to a
PNG in an ``ipywidgets.Image`` whenever a control changes.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence

import ipywidgets as widgets
from matplotlib.figure import Figure
from torch import Tensor, nn

from .figures import ComparisonPanels, compare_level, extract_pair, plot_comparison

__all__ = ["FeatureComparison"]

_REDUCTION_OPTIONS = [("mean over channels", "mean"), ("max |x| over channels", "max_abs"), ("one channel", "channel")]


class FeatureComparison:
    """Interactive comparison of feature upsamplers on one image at a time.

    Args:
        extractor: F, images (N, 3, H, W) in [0, 1] -> mapping of FPN levels (N, C, H_i, W_i)
            (for example :class:`srfkit.detection.FeatureExtractor` of a trained guide).
        upsamplers: ``{name: module}``, each ``forward(x, size)``; fixed interpolations and learned
            generators alike.
        images: a sequence of (3, H, W) RGB images in [0, 1] (or a (N, 3, H, W) tensor).
        names: display names of the images (default ``image 0``, ``image 1``, ...).
        levels: FPN levels offered (default: every level F returns).
        scale, mode: the degradation I_lr = degrade(I_tr, scale, mode).
        dpi: resolution of the rendered PNG.

    Controls (ipywidgets): :attr:`image_control`, :attr:`level_control`, :attr:`reduction_control`,
    :attr:`channel_control`. Output: :attr:`image_view` (PNG bytes in ``.value``) and
    :attr:`metrics_view` (an HTML table). Display the object itself in a notebook.
    """

    def __init__(
        self,
        extractor: nn.Module,
        upsamplers: Mapping[str, nn.Module],
        images: Sequence[Tensor] | Tensor,
        names: Sequence[str] | None = None,
        levels: Sequence[str] | None = None,
        scale: float = 0.5,
        mode: str = "bilinear",
        dpi: int = 80,
    ) -> None:
        if not upsamplers:
            raise ValueError("FeatureComparison needs at least one upsampler")
        self.images = [img for img in images]
        if not self.images:
            raise ValueError("FeatureComparison needs at least one image")
        for i, img in enumerate(self.images):
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"image {i} must be (3, H, W), got shape {tuple(img.shape)}")
        self.names = list(names) if names is not None else [f"image {i}" for i in range(len(self.images))]
        if len(self.names) != len(self.images):
            raise ValueError(f"{len(self.names)} names for {len(self.images)} images")
        self.extractor = extractor
        self.upsamplers = dict(upsamplers)
        self.scale, self.mode, self.dpi = scale, mode, dpi
        self._features: dict[int, tuple[dict[str, Tensor], dict[str, Tensor]]] = {}

        target, _ = self._pair(0)
        all_levels = list(target)
        self.levels = list(levels) if levels is not None else all_levels
        unknown = [lv for lv in self.levels if lv not in all_levels]
        if unknown:
            raise ValueError(f"unknown levels {unknown}; the extractor returns {all_levels}")
        self.channels = int(target[self.levels[0]].shape[1])

        self.image_control = widgets.Dropdown(
            options=list(zip(self.names, range(len(self.images)))), description="image"
        )
        self.level_control = widgets.Dropdown(options=self.levels, value=self.levels[0], description="FPN level")
        self.reduction_control = widgets.Dropdown(options=_REDUCTION_OPTIONS, value="mean", description="show")
        self.channel_control = widgets.IntSlider(
            value=0, min=0, max=self.channels - 1, description="channel", disabled=True, continuous_update=False
        )
        self.image_view = widgets.Image(format="png")
        self.metrics_view = widgets.HTML()
        for control in (self.image_control, self.level_control, self.reduction_control, self.channel_control):
            control.observe(self._on_change, names="value")
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.image_control, self.level_control]),
                widgets.HBox([self.reduction_control, self.channel_control]),
                self.image_view,
                self.metrics_view,
            ]
        )
        self.refresh()

    # ----- logic -------------------------------------------------------------------------------
    def _pair(self, index: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        if index not in self._features:
            self._features[index] = extract_pair(self.extractor, self.images[index], self.scale, self.mode)
        return self._features[index]

    @property
    def state(self) -> dict:
        """The current choice: ``{"image": int, "level": str, "reduction": "mean"|"max_abs"|int}``."""
        reduction = self.reduction_control.value
        if reduction == "channel":
            reduction = int(self.channel_control.value)
        return {"image": int(self.image_control.value), "level": self.level_control.value, "reduction": reduction}

    def set_state(self, image: int | None = None, level: str | None = None, reduction: str | int | None = None) -> None:
        """Change controls from Python, exactly as a reader would with the mouse (redraws once)."""
        self._hold = True
        try:
            if image is not None:
                self.image_control.value = int(image)
            if level is not None:
                self.level_control.value = level
            if reduction is not None:
                if isinstance(reduction, str):
                    self.reduction_control.value = reduction
                else:
                    self.reduction_control.value = "channel"
                    self.channel_control.value = int(reduction)
        finally:
            self._hold = False
        self.refresh()

    def panels(self, image: int | None = None, level: str | None = None, reduction: str | int | None = None):
        """The :class:`~srfkit.viz.figures.ComparisonPanels` of a state (default: the current one)."""
        state = self.state
        image = state["image"] if image is None else image
        level = state["level"] if level is None else level
        reduction = state["reduction"] if reduction is None else reduction
        target, low = self._pair(image)
        return compare_level(target, low, self.upsamplers, level, reduction)

    def static_figure(self, image: int | None = None, level: str | None = None, reduction=None) -> Figure:
        """The same comparison as a plain matplotlib figure (for the static site and for papers)."""
        state = self.state
        image = state["image"] if image is None else image
        return plot_comparison(self.panels(image, level, reduction), image=self.images[image])

    # ----- drawing -----------------------------------------------------------------------------
    _hold = False

    def _on_change(self, change: dict) -> None:
        self.channel_control.disabled = self.reduction_control.value != "channel"
        if not self._hold:
            self.refresh()

    def refresh(self) -> None:
        """Recompute the panels of the current state and redraw the image and the table."""
        self.channel_control.disabled = self.reduction_control.value != "channel"
        state = self.state
        panels = self.panels()
        fig = plot_comparison(panels, image=self.images[state["image"]])
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=self.dpi)
        self.last_panels: ComparisonPanels = panels
        self.image_view.value = buf.getvalue()
        self.metrics_view.value = self._metrics_html(panels)

    @staticmethod
    def _metrics_html(panels: ComparisonPanels) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(name)}</td><td>{m['l1']:.4g}</td><td>{m['psnr']:.2f}</td><td>{m['cosine']:.4f}</td></tr>"
            for name, m in panels.metrics.items()
        )
        return (
            f"<b>Fidelity at level {html.escape(panels.level)}</b> (all {panels.channels} channels; "
            "L1 lower is better, PSNR and cosine higher)"
            "<table class='srfkit-fidelity'><tr><th>upsampler</th><th>L1</th><th>PSNR (dB)</th><th>cosine</th></tr>"
            f"{rows}</table>"
        )

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
