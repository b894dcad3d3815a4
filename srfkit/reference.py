"""The paper's reported COCO numbers, quoted so chapters can print them beside ours.

Every value below is copied from Lee and Bae, *SRF-GAN* (tables named in each entry): COCO val2017,
ResNet-50-FPN, Detectron2, 8 Titan Xp GPUs. They are reference values from the paper, never results
of this code; chapters label them "paper (COCO)". Our own numbers come only from the files that
``python -m srfkit experiments`` writes under ``data/results/<profile>/``.

Where the authors' code is: the SRF-GAN repository releases evaluation code only (a patched detectron2
with ``generator_rdb.py`` and ``fpn_sr.py``, and trained weights); the code that trains SRF-GAN's stages
is published in their follow-up AFI-GAN repository. srfkit's notes on "the authors' training code"
(the detached adversarial term, the schedules in :mod:`srfkit.profiles`) refer to the latter.
"""

from __future__ import annotations

__all__ = ["PAPER_TABLES", "PEER_RESULTS", "paper_headline", "paper_table"]

PAPER_TABLES: dict[str, dict] = {
    "table4_progressive": {
        "caption": "Table 4. Effects of progressive learning (Mask R-CNN, R-50-FPN, COCO val2017).",
        "columns": ["SRF-GAN", "Multi-scale SRF extractor", "Target detector", "AP box", "AP mask"],
        "rows": {
            "A1": ["", "", "", 38.6, 35.2],
            "A2": ["yes", "", "yes", 39.4, 35.8],
            "A3": ["yes", "yes", "", 32.1, 30.0],
            "A4": ["yes", "yes", "yes (G frozen)", 39.9, 36.2],
            "A5": ["yes", "yes", "yes", 41.2, 37.0],
        },
    },
    "table5_interpolation": {
        "caption": "Table 5. Interpolation methods for FPN (Mask R-CNN, R-50-FPN, COCO val2017).",
        "columns": ["AP box", "AP mask"],
        "rows": {
            "nearest": [38.6, 35.2],
            "bilinear": [38.6, 35.2],
            "bicubic": [38.5, 35.1],
            "srf": [41.2, 37.0],
        },
    },
    "table6_degradation": {
        "caption": "Table 6. Degradation functions for the low-resolution images.",
        "columns": ["AP box", "AP mask"],
        "rows": {"nearest": [41.0, 37.1], "bicubic": [41.2, 37.1], "bilinear": [41.2, 37.0]},
    },
    "table7_semantic_level": {
        "caption": "Table 7. Semantic level matching in L_SRF(M, D, F).",
        "columns": ["AP box", "AP mask"],
        "rows": {"different": [39.6, 35.9], "same": [41.2, 37.0]},
    },
    "table3_cross_head": {
        "caption": "Table 3. Target detectors trained with SRF extractors of different heads (COCO val2017).",
        "columns": ["Target detector", "Extractor head", "AP box", "AP mask", "Time (ms)"],
        "rows": {
            "mask_rcnn/baseline": ["Mask R-CNN", "-", 38.6, 35.2, 72],
            "mask_rcnn/mask_rcnn": ["Mask R-CNN", "Mask R-CNN", 41.2, 37.0, 118],
            "mask_rcnn/retinanet": ["Mask R-CNN", "RetinaNet", 40.0, 36.2, 118],
            "retinanet/baseline": ["RetinaNet", "-", 37.4, None, 88],
            "retinanet/mask_rcnn": ["RetinaNet", "Mask R-CNN", 39.6, None, 101],
            "retinanet/retinanet": ["RetinaNet", "RetinaNet", 38.2, None, 102],
            "mask_rcnn/centermask": ["Mask R-CNN", "CenterMask", 40.5, 36.5, 117],
            "retinanet/centermask": ["RetinaNet", "CenterMask", 39.7, None, 107],
            "centermask/baseline": ["CenterMask", "-", 39.8, 35.5, 73],
            "centermask/mask_rcnn": ["CenterMask", "Mask R-CNN", 42.1, 37.2, 84],
            "centermask/retinanet": ["CenterMask", "RetinaNet", 40.9, 35.9, 86],
            "centermask/centermask": ["CenterMask", "CenterMask", 41.7, 36.8, 85],
        },
    },
    "table1_detectors": {
        "caption": "Table 1. Detectors with NN interpolation or SRF (G or M reused), 12 epochs, COCO val2017.",
        "columns": ["Detector", "Interpolation", "Reuse", "AP box", "AP mask", "# Params", "Time (ms)"],
        "rows": {
            "retinanet/nearest": ["RetinaNet", "NN", "-", 37.4, None, "37M", 88],
            "faster_rcnn/nearest": ["Faster R-CNN", "NN", "-", 37.9, None, "41M", 64],
            "mask_rcnn/nearest": ["Mask R-CNN", "NN", "-", 38.6, 35.2, "44M", 72],
            "retinanet/G": ["RetinaNet", "SRF", "G", 37.8, None, "47M", 101],
            "faster_rcnn/G": ["Faster R-CNN", "SRF", "G", 38.9, None, "51M", 109],
            "mask_rcnn/G": ["Mask R-CNN", "SRF", "G", 39.5, 35.8, "54M", 118],
            "retinanet/M": ["RetinaNet", "SRF", "M", 39.6, None, "47M", 101],
            "faster_rcnn/M": ["Faster R-CNN", "SRF", "M", 39.3, None, "51M", 109],
            "mask_rcnn/M": ["Mask R-CNN", "SRF", "M", 41.2, 37.0, "54M", 118],
        },
    },
    "table2_testdev": {
        "caption": "Table 2. The paper's re-implementations (*) with NN and with SRF, COCO test-dev.",
        "columns": ["Detector", "Backbone", "Interpolation", "Epoch", "AP box", "AP mask"],
        "rows": {
            "retinanet/nearest": ["RetinaNet*", "R-50-FPN", "NN", 12, 37.6, None],
            "retinanet/srf": ["RetinaNet* (ours)", "R-50-FPN", "SRF", 12, 40.1, None],
            "faster_rcnn/nearest": ["Faster R-CNN*", "R-50-FPN", "NN", 12, 38.3, None],
            "faster_rcnn/srf": ["Faster R-CNN* (ours)", "R-50-FPN", "SRF", 12, 39.8, None],
            "mask_rcnn/nearest": ["Mask R-CNN*", "R-50-FPN", "NN", 12, 39.0, 35.5],
            "mask_rcnn/srf": ["Mask R-CNN* (ours)", "R-50-FPN", "SRF", 12, 41.5, 37.4],
            "mask_rcnn_3x/nearest": ["Mask R-CNN*", "R-50-FPN", "NN", 37, 41.3, 37.5],
            "mask_rcnn_3x/srf": ["Mask R-CNN* (ours)", "R-50-FPN", "SRF", 37, 42.1, 37.9],
            "centermask/nearest": ["CenterMask*", "R-50-FPN", "NN", 12, 39.7, 35.2],
            "centermask/srf": ["CenterMask* (ours)", "R-50-FPN", "SRF", 12, 42.4, 37.5],
            "cascade_rcnn/nearest": ["Cascade R-CNN*", "S-101-FPN", "NN", 12, 48.5, 41.8],
            "cascade_rcnn/srf": ["Cascade R-CNN* (ours)", "S-101-FPN", "SRF", 12, 48.7, 42.0],
        },
    },
}


def paper_table(name: str) -> dict:
    """One quoted table by key (``table4_progressive``, ``table5_interpolation``, ...)."""
    if name not in PAPER_TABLES:
        raise KeyError(f"no paper table {name!r}; valid: {', '.join(PAPER_TABLES)}")
    return PAPER_TABLES[name]


# Learned upsampling peers, quoted from CARAFE (Wang et al., ICCV 2019) and DySample (Liu et al., ICCV 2023)
# as collected in the project's notes: COCO val2017, ResNet-50-FPN, 1x schedule, mmdetection. Box AP of
# Faster R-CNN, box and mask AP of Mask R-CNN, and the parameters the method adds to the detector. Gains are
# over the same toolbox's nearest baseline (row "nearest"); reference values only, never results of this code.
PEER_RESULTS: dict[str, dict[str, float]] = {
    "nearest": {"faster_box": 37.5, "mask_box": 38.3, "mask_mask": 34.7, "added_params": 0},
    "carafe": {"faster_box": 38.6, "mask_box": 39.2, "mask_mask": 35.4, "added_params": 0.22e6},
    "dysample": {"faster_box": 38.6, "mask_box": 39.2, "mask_mask": 35.4, "added_params": 32.7e3},
    "dysample_dynamic": {"faster_box": 38.7, "mask_box": 39.6, "mask_mask": 35.7, "added_params": 65.5e3},
}


def paper_headline() -> dict[str, float]:
    """The paper's headline figures, derived from its quoted tables (never typed in a chapter).

    Returns ``box_ap``/``mask_ap`` of the baseline (Table 4, A1) and of the full method (A5), their
    gains, the Mask R-CNN parameter counts with NN and with SRF (Table 1, millions), and the added
    time per image averaged over the three detector families of Table 1 (ms, M reuse vs NN).
    """
    t4 = paper_table("table4_progressive")["rows"]
    t1 = paper_table("table1_detectors")
    col = {name: i for i, name in enumerate(t1["columns"])}
    rows = t1["rows"]

    def millions(text: str) -> float:
        return float(str(text).rstrip("M"))

    families = ("retinanet", "faster_rcnn", "mask_rcnn")
    added_ms = [rows[f"{f}/M"][col["Time (ms)"]] - rows[f"{f}/nearest"][col["Time (ms)"]] for f in families]
    return {
        "box_ap_baseline": t4["A1"][3],
        "box_ap_srf": t4["A5"][3],
        "box_gain": round(t4["A5"][3] - t4["A1"][3], 1),
        "mask_ap_baseline": t4["A1"][4],
        "mask_ap_srf": t4["A5"][4],
        "mask_gain": round(t4["A5"][4] - t4["A1"][4], 1),
        "params_nn_m": millions(rows["mask_rcnn/nearest"][col["# Params"]]),
        "params_srf_m": millions(rows["mask_rcnn/M"][col["# Params"]]),
        "added_params_m": millions(rows["mask_rcnn/M"][col["# Params"]])
        - millions(rows["mask_rcnn/nearest"][col["# Params"]]),
        "added_ms": sum(added_ms) / len(added_ms),
    }
