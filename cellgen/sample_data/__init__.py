"""A small PBC sample shipped with cellgen so that a fresh clone runs without other data.

Images: Acevedo A., Merino A., Alférez S., Molina Á., Boldú L., Rodellar J.
"A dataset of microscopic peripheral blood cell images for development of
automatic recognition systems". Data in Brief 30 (2020) 105474.
doi:10.1016/j.dib.2020.105474. License CC BY 4.0. See ATTRIBUTION.md.
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "val", "test")
# Not a Python identifier on purpose: setuptools would otherwise take every image folder
# for an implicit namespace package and warn ("Package would be ignored") on install.
SAMPLE_FOLDER = "pbc-64"


def sample_path(split: str = "train") -> Path:
    """Folder of the shipped sample split (``train``, ``val`` or ``test``), one sub-folder per class."""
    if split not in SPLITS:
        raise ValueError(f"unknown sample split {split!r}; choose one of {', '.join(SPLITS)}")
    path = Path(__file__).resolve().parent / SAMPLE_FOLDER / split
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: the embedded sample is missing from this installation")
    return path
