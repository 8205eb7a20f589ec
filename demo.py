"""``make demo``: the main job on the sample embedded in the package.

Checks the embedded PBC sample (class counts, image sizes, unreadable files) and
writes a preview grid with a row per class.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cellgen  # noqa: F401
from cellgen.cli.data_tool import main as data_tool
from cellgen.sample_data import sample_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="demo_out", help="output folder")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = sample_path("train")
    code = data_tool(["scan", str(train), "--json", str(out / "sample_scan.json")])
    if code:
        return code
    code = data_tool(["preview", str(train), "--out", str(out / "sample_preview.png")])
    if code:
        return code
    print(f"demo: class counts in {out / 'sample_scan.json'}, preview grid in {out / 'sample_preview.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
