"""Write images from a trained generator run; see ``python generate.py --help``."""
from cellgen.cli.generate import main

if __name__ == "__main__":
    raise SystemExit(main())
