"""Train the convolutional VAE of Matos (2025); see ``python train_cvae.py --help``."""
from cellgen.cli.train_cvae import main

if __name__ == "__main__":
    raise SystemExit(main())
