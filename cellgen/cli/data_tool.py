"""``data_reader.py``: check an image source and preview it.

Commands:
    scan PATH [--size N] [--crop N] [--on-error raise|skip] [--json OUT]
        Decodes every image (in parallel, progress bar on stderr) and prints
        the images per class, the total, the image sizes seen and the
        unreadable files. Exit code 0, or 2 with a one-line ``error: ...``.
    preview PATH --out grid.png [--size N] [--per-class K] [--crop N]
        Writes a PNG grid: one row per class, the class name at its left.

PATH is anything :class:`cellgen.data_reader.DataReader` reads: a class-folder
tree, a flat folder, a ``path,label`` CSV or ``tfds:NAME[:SPLIT]``.

Example:
    python data_reader.py scan /work/shared/data/pbc128/train
    python data_reader.py preview /work/shared/data/pbc128-tiny --out grid.png --per-class 6
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from cellgen.data_reader import DataError, DataReader, ScanReport, scan_images
from cellgen.images import to_uint8


class _UsageError(Exception):
    """A command-line usage problem (reported as ``error: ...``, exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _UsageError(message)


def _crop_value(text: str) -> int | float:
    """--crop accepts pixels (``192``) or a fraction of the shorter side (``0.75``)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"crop must be pixels (int > 1) or a fraction in (0, 1], got {text!r}")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="data_reader.py", description="Check and preview cellgen image sources.")
    commands = parser.add_subparsers(dest="command", metavar="{scan,preview}", parser_class=_Parser)

    scan = commands.add_parser("scan", help="decode every image; print counts, sizes and unreadable files")
    scan.add_argument("path", help="class-folder tree, flat folder, path,label CSV or tfds:NAME[:SPLIT]")
    scan.add_argument("--size", type=int, default=None, help="also resize every image to N x N")
    scan.add_argument("--crop", type=_crop_value, default=None,
                      help="center crop: pixels (int > 1) or fraction of the shorter side (0, 1]")
    scan.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                      help="stop at the first unreadable file (raise) or list them all (skip)")
    scan.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the report as JSON")
    scan.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")
    scan.add_argument("--classes", default=None, metavar="CLASSES_JSON", help="fixed class list (classes.json)")
    scan.add_argument("--tfds-data-dir", default=None, metavar="DIR",
                      help="TFDS data directory for tfds:NAME sources (default: $TFDS_DATA_DIR)")
    scan.set_defaults(handler=_run_scan)

    preview = commands.add_parser("preview", help="write a PNG grid, one row per class")
    preview.add_argument("path", help="class-folder tree, flat folder, path,label CSV or tfds:NAME[:SPLIT]")
    preview.add_argument("--out", type=Path, required=True, help="PNG file to write")
    preview.add_argument("--size", type=int, default=96, help="tile size in pixels (default 96)")
    preview.add_argument("--per-class", type=int, default=8, help="images per row (default 8)")
    preview.add_argument("--crop", type=_crop_value, default=None,
                         help="center crop: pixels (int > 1) or fraction of the shorter side (0, 1]")
    preview.add_argument("--seed", type=int, default=0, help="which images are drawn (default 0)")
    preview.add_argument("--on-error", choices=("raise", "skip"), default="raise")
    preview.set_defaults(handler=_run_preview)
    return parser


def _format_scan(report: ScanReport) -> str:
    name_width = max([len("class"), len("total")] + [len(name) for name in report.classes])
    lines = [f"source: {report.source} ({report.layout})",
             f"{'class':<{name_width}}  {'images':>7}"]
    lines += [f"{name:<{name_width}}  {count:>7}" for name, count in report.class_counts.items()]
    lines.append(f"{'total':<{name_width}}  {report.total:>7}")
    sizes = ", ".join(f"{size}: {count}" for size, count in report.image_sizes.items()) or "none"
    lines.append(f"image sizes (width x height): {sizes}")
    lines.append(f"unreadable files: {len(report.skipped)}")
    lines += [f"  {path}: {reason}" for path, reason in report.skipped]
    if report.ignored:
        lines.append(f"ignored (not image files): {len(report.ignored)}")
        lines += [f"  {path}: {reason}" for path, reason in report.ignored]
    return "\n".join(lines)


def _run_scan(args) -> int:
    report = scan_images(args.path, crop=args.crop, image_size=args.size, on_error=args.on_error,
                         classes=args.classes, workers=args.workers, progress=True,
                         tfds_data_dir=args.tfds_data_dir)
    print(_format_scan(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def _draw_grid(rows: list[tuple[str, list[np.ndarray]]], tile: int, columns: int, out: Path):
    """Saves a grid (a row of uint8 RGB tiles per class, its name at the left) as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    gap = max(2, tile // 32)
    mosaic = np.full((len(rows) * (tile + gap) + gap, columns * (tile + gap) + gap, 3), 255, dtype=np.uint8)
    for row_index, (_, tiles) in enumerate(rows):
        for column_index, image in enumerate(tiles[:columns]):
            top, left = gap + row_index * (tile + gap), gap + column_index * (tile + gap)
            mosaic[top:top + tile, left:left + tile] = image
    dpi = 100
    label_px = 9 * max(len(name) for name, _ in rows) + 16
    height_px, mosaic_w = mosaic.shape[:2]
    width_px = label_px + mosaic_w
    figure = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_axes([label_px / width_px, 0.0, mosaic_w / width_px, 1.0])
    axes.imshow(mosaic, interpolation="nearest")
    axes.set_axis_off()
    for row_index, (name, tiles) in enumerate(rows):
        centre = gap + row_index * (tile + gap) + tile / 2
        text = name if tiles else f"{name} (none)"
        axes.text(-gap * 2, centre, text, ha="right", va="center", fontsize=11, clip_on=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=dpi, facecolor="white")


def _run_preview(args) -> int:
    if args.per_class < 1:
        raise DataError(f"--per-class must be >= 1, got {args.per_class}")
    if args.out.suffix.lower() != ".png":
        raise DataError(f"--out must be a .png file, got {args.out}")
    probe = DataReader(args.path, image_size=args.size, crop=args.crop, on_error=args.on_error,
                       allow_missing_classes=True, verify=False)
    limits = {name: args.per_class for name in probe.classes}
    reader = DataReader(args.path, image_size=args.size, crop=args.crop, shuffle=False, seed=args.seed,
                        on_error=args.on_error, class_limits=limits, allow_missing_classes=True,
                        upscale_warning=False)  # a preview enlarges small images on purpose
    images, labels = reader.load_all()
    pixels = to_uint8(images)
    rows = [(name, [pixels[i] for i in np.flatnonzero(labels == class_id)])
            for class_id, name in enumerate(reader.classes)]
    _draw_grid(rows, reader.image_shape[0], args.per_class, args.out)
    print(f"wrote {args.out} ({len(rows)} rows x up to {args.per_class} images of "
          f"{reader.image_shape[1]}x{reader.image_shape[0]} px)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs the tool; returns the exit code (0, or 2 after a one-line ``error: ...`` on stderr)."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise _UsageError("choose a command: scan or preview (see --help)")
        return args.handler(args)
    except SystemExit as exit_request:  # --help
        return exit_request.code if isinstance(exit_request.code, int) else 0
    except (_UsageError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
    except OSError as error:
        print(f"error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
