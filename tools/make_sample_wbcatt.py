"""Writes cellgen/sample_data/pbc-64/wbcatt.csv: the WBCAtt rows of the embedded sample's images.

Run once from the repository root (the output is committed)::

    python tools/make_sample_wbcatt.py [../shared/data/wbcatt/pbc128_wbcatt_trainval.csv]

The source is the WBCAtt table keyed to the project's splits (``../shared/data/wbcatt``; WBCAtt:
Tsutsui, Pang and Wen, NeurIPS 2023, MIT licence). Every image of the sample gets one row; its
``split`` is the sample folder it lies in (train, val or test; the sample's val and test images
both come from the 128 px validation split). Images of classes WBCAtt does not annotate
(erythroblast, ig, platelet) get a row with empty attribute cells ("no value").
"""

import dataclasses
import sys
from pathlib import Path

from cellgen.data.attributes import AttributeRow, read_table
from cellgen.images import is_image_file
from cellgen.sample_data import SPLITS, sample_path

root = Path(__file__).resolve().parents[1]
source = Path(sys.argv[1]) if len(sys.argv) > 1 else (root.parent / "shared" / "data" / "wbcatt"
                                                      / "pbc128_wbcatt_trainval.csv")
table = read_table(source)
rows, annotated = [], 0
for split in SPLITS:
    for class_dir in sorted(path for path in sample_path(split).iterdir() if path.is_dir()):
        for image in sorted(path for path in class_dir.iterdir() if is_image_file(path.name)):
            row = table.row_for(class_dir.name, image.name)
            if row is None:
                if class_dir.name in table.classes:
                    raise SystemExit(f"{image}: no WBCAtt row, though its class is annotated")
                row = AttributeRow(0, split, class_dir.name, image.name, ("",) * len(table.columns),
                                   tuple((name, "") for name, _ in table.rows[0].extra))
            else:
                annotated += 1
            rows.append(dataclasses.replace(row, split=split))
target = table.write(sample_path("train").parent / "wbcatt.csv", rows)
print(f"wrote {len(rows)} rows ({annotated} annotated) to {target}")
