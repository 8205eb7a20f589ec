"""Train the AC-GAN on a frozen Vanilla-GAN; see ``python train_acgan.py --help``."""
from cellgen.cli.train_acgan import main

if __name__ == "__main__":
    raise SystemExit(main())
