"""Run an augmentation study end to end; see ``python run_study.py --help``."""
from cellgen.cli.run_study import main

if __name__ == "__main__":
    raise SystemExit(main())
