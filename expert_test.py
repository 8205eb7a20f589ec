"""Make and score an expert real-vs-synthetic test kit; see ``python expert_test.py --help``."""
from cellgen.cli.expert_test import main

if __name__ == "__main__":
    raise SystemExit(main())
