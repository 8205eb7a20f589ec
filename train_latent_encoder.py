"""Train the image-to-latent encoder; see ``python train_latent_encoder.py --help``."""
from cellgen.cli.train_latent_encoder import main

if __name__ == "__main__":
    raise SystemExit(main())
