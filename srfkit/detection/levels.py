"""Pyramid levels by name: FPN output keys (torchvision's ``"0"``, ``"1"``, ..., ``"pool"``) as P2, P3, ...

P_k is the level of stride ``2**k``. A two-stage detector's FPN (and :class:`~srfkit.detection.FeatureExtractor`
over it) returns ``"0".."3"`` for P2-P5 and ``"pool"`` for P6; a one-stage one returns ``"0".."2"`` for P3-P5 and
``"p6"``, ``"p7"``. :func:`~srfkit.detection.pyramid_keys` gives a model's own level -> key map; the helpers here
name keys and pick the levels of the paper's SRF loss (Eq. 2 and 3: P2-P5).
"""

from __future__ import annotations

from torch import nn

from .transfer import pyramid_keys

__all__ = ["SRF_LEVELS", "level_name", "srf_level_keys"]

SRF_LEVELS = (2, 3, 4, 5)  # P2-P5, the levels of Eq. (2) and (3)


def level_name(key: str, model: nn.Module | None = None) -> str:
    """``"P2"`` for FPN key ``"0"`` (two-stage numbering), ``"P6"`` for ``"pool"``, ``"P7"`` for ``"p7"``.

    With ``model`` (a detector, a ``FeatureExtractor`` or a ``BackboneWithFPN``), digit keys are named by
    that model's own levels (:func:`~srfkit.detection.pyramid_keys`), so a one-stage detector's ``"0"`` is P3.
    """
    key = str(key)
    if key == "pool":
        return "P6"
    if key[:1] == "p" and key[1:].isdigit():
        return f"P{key[1:]}"
    if not key.isdigit():
        raise ValueError(f"{key!r} is not an FPN level key ('0', '1', ..., 'pool', 'p6', 'p7')")
    if model is None:
        return f"P{int(key) + 2}"
    levels = {k: level for level, k in pyramid_keys(model).items()}
    if key not in levels:
        raise ValueError(f"the model has no FPN level key {key!r}; its keys: {', '.join(levels)}")
    return f"P{levels[key]}"


def srf_level_keys(model: nn.Module) -> list[str]:
    """The FPN keys of the SRF levels (P2-P5, finest first) that ``model`` has: ``["0", "1", "2", "3"]``
    for a two-stage detector or its ``FeatureExtractor``, ``["0", "1", "2"]`` (P3-P5) for a one-stage one."""
    keys = pyramid_keys(model)
    return [keys[k] for k in SRF_LEVELS if k in keys]
