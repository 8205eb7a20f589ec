"""Builds cellgen/sample_data/pbc-64 from ../shared/data/pbc128 (run once; output is committed).

train: 24 images per class drawn from pbc128/train; val and test: 8 per class each,
disjoint, drawn from pbc128/val (the real test split is held apart). Images are
resized 128 -> 64 px with INTER_AREA and written as JPEG quality 92.
"""

import random
import sys
from pathlib import Path

import cv2
import numpy as np

root = Path(__file__).resolve().parents[1]
source = Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent / "shared" / "data" / "pbc128"
target = root / "cellgen" / "sample_data" / "pbc-64"  # not an identifier: see sample_data/__init__.py
rng = random.Random(20261122)
for split, src_split, counts in (("train", "train", [24]), ("val+test", "val", [8, 8])):
    for class_dir in sorted((source / src_split).iterdir()):
        files = sorted(class_dir.glob("*.jpg"))
        chosen = rng.sample(files, sum(counts))
        parts = {"train": chosen} if split == "train" else {"val": chosen[:8], "test": chosen[8:]}
        for name, group in parts.items():
            out = target / name / class_dir.name
            out.mkdir(parents=True, exist_ok=True)
            for file in sorted(group):
                image = cv2.imdecode(np.fromfile(str(file), np.uint8), cv2.IMREAD_COLOR)
                small = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA)
                ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 92])
                data.tofile(str(out / file.name))
print("written", sum(1 for _ in target.rglob("*.jpg")), "images to", target)
