"""``train_vanilla_gan.py``: train the Vanilla-GAN (K&C 2020, N&Z 2023) or fine-tune it on one class (FreezeD).

Run kind ``vanilla_gan``. Presets: kc2020_vanilla_gan, nz2023_gan_base,
nz2023_gan_finetune, matos2025_dcgan28, gan_fast (configs/).

Examples:
    python train_vanilla_gan.py --config kc2020_vanilla_gan --data ../shared/data/pbc128/train --out runs/gan
    python train_vanilla_gan.py --config nz2023_gan_base --data DIR --out runs/gan-base --size 128
    python train_vanilla_gan.py --config nz2023_gan_finetune --finetune-from runs/gan-base/50 \\
        --class basophil --out runs/gan-basophil          # FreezeD on one class, base epoch 50
    python train_vanilla_gan.py --config gan_fast --data DIR --out runs/gan-fast --set d_steps=2
    python train_vanilla_gan.py --out runs/gan --resume   # continue an interrupted run
    python generate.py --run runs/gan --epoch 50 --n 500 --out synthetic/gan

The run directory gets the resolved config, classes.json, resumable checkpoints
(both networks and both optimizers), the networks of every save_every-th epoch
in models/, sample grids from a fixed latent batch in samples/, logs/history.csv
+ TensorBoard, metrics/loss_curves.png and metrics/train.json.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from cellgen.cli.common import guarded
from cellgen.cli.options import run_trainer, training_parser


def build_parser() -> argparse.ArgumentParser:
    return training_parser("train_vanilla_gan.py", __doc__, finetune_help=(
        "start from a vanilla_gan run's saved networks (default: its latest saved epoch) "
        "and apply the freeze_* settings (FreezeD)"))


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before importing TensorFlow: --help stays fast
    return run_trainer(args, "cellgen.gan.train_lib")
