"""Evaluate generated images (FID, KID, precision/recall, memorisation); see ``python evaluate_generator.py --help``."""
from cellgen.cli.evaluate_generator import main

if __name__ == "__main__":
    raise SystemExit(main())
