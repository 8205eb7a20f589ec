"""Classifier F1 with and without synthetic images; see ``python evaluate_classifier.py --help``."""
from cellgen.cli.evaluate_classifier import main

if __name__ == "__main__":
    raise SystemExit(main())
