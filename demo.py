"""``make demo``: the main job on the sample embedded in the package.

1. checks the embedded PBC sample (class counts, image sizes, unreadable files) and
   writes a preview grid with a row per class;
2. runs the augmentation study ``configs/study_demo.toml`` (the design of the basophil
   study): basophils cut to 8 images, a class-conditional DDIM trained on the kept
   images of every class and sampled for basophils, a small classifier in the baseline,
   classical and classical+synthetic arms with 3 paired seeds, the classical reference on
   every basophil, and the report (``OUT/study/report.html``).

Re-running resumes the study where it stopped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cellgen  # noqa: F401
from cellgen.cli.data_tool import main as data_tool
from cellgen.cli.run_study import main as run_study
from cellgen.sample_data import sample_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="demo_out", help="output folder")
    parser.add_argument("--config", default="study_demo", help="study preset to run")
    parser.add_argument("--skip-study", action="store_true", help="only scan and preview the sample")
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
    if args.skip_study:
        return 0
    code = run_study(["--config", args.config, "--out", str(out / "study")])
    if code == 0:
        print(f"demo: study report in {out / 'study' / 'report.html'} (Markdown: {out / 'study' / 'report.md'})")
    return code


if __name__ == "__main__":
    sys.exit(main())
