#!/usr/bin/env python
"""Build the shipped datasets (shapes, trees, nuclei, photos) for a profile.

    python data/build.py --profile quick            # all four, into data/build/quick/
    python data/build.py --profile cpu --only shapes
    python data/build.py --profile quick --force    # rebuild even if already built

A dataset already built for the profile (same settings, seed and builder version) is skipped.
The output root is ``$SRFKIT_DATA_DIR`` when set (or ``--root``), else ``data/build``.
The logic lives in :mod:`srfkit.data.builders`; this is its command line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from srfkit.data.builders import DATASETS, build_dataset, data_root  # noqa: E402
from srfkit.profiles import PROFILES, get_profile  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick", choices=list(PROFILES), help="profile whose sizes to build at")
    parser.add_argument("--only", action="append", choices=list(DATASETS), help="build only this dataset (repeatable)")
    parser.add_argument("--force", action="store_true", help="rebuild datasets that are already built")
    parser.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    parser.add_argument("--root", type=Path, default=None, help="output root (default $SRFKIT_DATA_DIR or data/build)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    profile = get_profile(args.profile)
    names = args.only or list(DATASETS)
    root = data_root(args.root)
    print(f"building {', '.join(names)} for profile {profile.name!r} into {root / profile.name}")
    start = time.perf_counter()
    for name in names:
        if name == "shapes" and min(profile.dataset_images) <= 0:
            print(f"  shapes: skipped, profile {profile.name!r} generates no synthetic images (dataset_images=0)")
            continue
        record = build_dataset(
            name, profile, args.root, seed=args.seed, force=args.force, progress=not args.no_progress
        )
        summary = record["summary"]
        splits = [s for s in DATASETS[name].splits if s in summary]
        counts = ", ".join(
            f"{s} {summary[s]['images']} images / {summary[s]['annotations']} annotations" for s in splits
        )
        state = "already built" if record["skipped"] else f"built in {summary['seconds']:.1f} s"
        print(f"  {name}: {state}: {counts}")
        if name == "shapes":
            for s in splits:
                h = summary[s]["sizes"]
                print(
                    f"    shapes {s} object sizes (COCO area buckets): small (<32^2) {h['small']}, "
                    f"medium (<96^2) {h['medium']}, large {h['large']}"
                )
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
