"""Compare the CVAE, DCGAN, DDPM and DDIM at 28 px (Matos 2025); see ``python compare_generators.py --help``."""
from cellgen.cli.compare_generators import main

if __name__ == "__main__":
    raise SystemExit(main())
