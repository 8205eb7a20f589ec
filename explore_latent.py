"""Latent-space experiments (reconstruct, interpolate, perturb); see ``python explore_latent.py --help``."""
from cellgen.cli.explore_latent import main

if __name__ == "__main__":
    raise SystemExit(main())
