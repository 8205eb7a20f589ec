"""``train_ddim.py``: train the DDIM of Nilsson & Zettergren (2023), or fine-tune one on a single class;
run kind ``ddim`` (also the discrete-time DDPM of Matos 2025, and the class-conditional DDIM).

Examples:
    python train_ddim.py --config nz2023_ddim_base --data ../shared/data/pbc128/train --out runs/ddim-base
    python train_ddim.py --config nz2023_ddim_finetune --finetune-from runs/ddim-base --class basophil \\
        --epochs 64 --out runs/ddim-basophil      # N&Z Table 8: fine-tune on one class
    python train_ddim.py --config ddim_cond32 --data ../shared/data/pbc128/train --out runs/ddim-cond
    python train_ddim.py --config ddim_fast --data DIR --out runs/ddim-fast --precision bf16
    python train_ddim.py --config matos2025_ddpm28 --data DIR --out runs/ddpm28
    python train_ddim.py --config ddim_cond32 --data ../shared/data/pbc128/train \
        --attributes-csv ../shared/data/wbcatt/pbc128_wbcatt_trainval.csv --set attributes=nucleus_shape \
        --out runs/ddim-attr                      # conditioned on class and WBCAtt's nucleus shape
    python train_ddim.py --finetune-from runs/ddim-base --class neutrophil \
        --attributes-csv ../shared/data/wbcatt/pbc128_wbcatt_trainval.csv \
        --select nucleus_shape=segmented-multilobed --out runs/ddim-multilobed   # N&Z: fine-tune on a subset
    python train_ddim.py --out runs/ddim-base --resume   # continue an interrupted run
    python generate.py --run runs/ddim-basophil --n 200 --steps 20 --eta 0 --contrast 20 --out synth/basophil

The run directory gets the resolved config, classes.json, resumable checkpoints
(online and EMA networks, image statistics, optimizer, noise seeds), the model of every
save_every-th epoch and of the last one in models/, sample grids from fixed
noise in samples/, logs/history.csv + TensorBoard, metrics/loss_curves.png and
metrics/train.json.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from cellgen.cli.common import guarded
from cellgen.cli.options import run_trainer, training_parser


def _attribute_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--attributes-csv", metavar="CSV",
                        help="attribute table of the training images (WBCAtt's layout: split,class,file,"
                             "<attributes>), matched by class and file name")
    parser.add_argument("--select", action="append", metavar="COLUMN=VALUE",
                        help="train on the images with this attribute value only (repeatable: different "
                             "columns must all hold, values of one column are alternatives)")


def build_parser() -> argparse.ArgumentParser:
    return training_parser("train_ddim.py", __doc__, finetune_help=(
        "start from a ddim run's saved model (online and EMA weights, image statistics; "
        "default: its latest saved epoch)"), stage_options=_attribute_options)


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before importing TensorFlow: --help stays fast
    return run_trainer(args, "cellgen.diffusion.train_lib", attributes_csv=args.attributes_csv, select=args.select)
