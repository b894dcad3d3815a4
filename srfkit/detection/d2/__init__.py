"""detectron2 as srfkit's second engine: SRF-FPN backbones, configs, datasets, trainer, F for stage 1.

Importing this package does not import detectron2; its submodules do. Without detectron2 installed,
:func:`require_detectron2` raises an ``ImportError`` that says how to install it (``make d2``), and
the CLI functions of :mod:`srfkit.detection.d2.cli` print the same hint.

Submodules:

* :mod:`.backbone`: :class:`~.backbone.SRFFPN` (detectron2's FPN with any srfkit upsampler as its
  top-down step, named ``srf_module`` as in the authors' code), ``add_srf_config`` and the registered
  backbone builders (srfkit's names and the authors' three names).
* :mod:`.centermask`: CenterMask (detectron2's FCOS + srfkit's SAG-Mask branch), registered as
  ``MODEL.META_ARCHITECTURE`` ``SRFCenterMask``.
* :mod:`.config`: the packaged YAML configs and :func:`~.config.get_config`.
* :mod:`.data`: the shipped datasets registered in ``DatasetCatalog``.
* :mod:`.engine`: training with detectron2's trainer, COCOEvaluator, the nearest-vs-SRF experiment.
* :mod:`.features`: a detectron2 backbone + FPN as srfkit's feature extractor F.
* :mod:`.transfer`: a srfkit torchvision detector's ResNet body, FPN convs (level by level) and G as
  the start of a detectron2 SRF-FPN backbone, never its heads (``train_detector(..., init_from=M)``).
* :mod:`.cli`: ``configure_parser(parser)`` and ``run_from_args(args)`` of the ``d2-train`` command.
"""

from __future__ import annotations

import importlib.util

__all__ = ["ARCHS", "FINAL_CHECKPOINT", "INSTALL_HINT", "RUN_RECORD", "detectron2_available", "require_detectron2"]

# What train_detector writes into OUTPUT_DIR before training: how to register the data again and which
# dataset the run trained on, so that a finished folder can be evaluated later (engine.evaluate_output_dir).
# The detectors of the detectron2 engine (each has a packaged YAML config; see .config).
ARCHS = ("mask_rcnn", "faster_rcnn", "retinanet", "cascade_mask_rcnn", "cascade_rcnn", "centermask")
RUN_RECORD = "srfkit_run.json"
FINAL_CHECKPOINT = "model_final.pth"  # detectron2's last checkpoint of a finished run

INSTALL_HINT = (
    "detectron2 is not installed in this environment. srfkit builds it from the vendored source: "
    "run `make d2` in the srfkit checkout (it builds the wheel once per machine into ~/.cache/srfkit and "
    "installs it with its pinned dependencies), or by hand: `pip install -r requirements-detectron2.txt && "
    "MAX_JOBS=2 pip wheel --no-build-isolation --no-deps -w wheels ../shared/vendor/detectron2-02b5c4e.tar.gz "
    "&& pip install --no-deps wheels/detectron2-*.whl`."
)


def detectron2_available() -> bool:
    """Whether detectron2 can be imported (checked without importing it)."""
    return importlib.util.find_spec("detectron2") is not None


def require_detectron2() -> None:
    """Raise ``ImportError`` with the install hint when detectron2 is missing."""
    if not detectron2_available():
        raise ImportError(INSTALL_HINT)
