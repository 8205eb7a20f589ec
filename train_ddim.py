"""Train the DDIM (and per-class fine-tuning); see ``python train_ddim.py --help``."""
from cellgen.cli.train_ddim import main

if __name__ == "__main__":
    raise SystemExit(main())
