"""Train the Vanilla-GAN (and FreezeD fine-tuning); see ``python train_vanilla_gan.py --help``."""
from cellgen.cli.train_vanilla_gan import main

if __name__ == "__main__":
    raise SystemExit(main())
