"""How many real images is a synthetic set worth? The same study at several caps of the scarce class.

``sweep_caps = [0.02, 0.05, 0.1, 0.25, 1.0]`` (fractions or counts of the scarce class, off by
default) runs one complete study per cap in ``DIR/caps/cap-<CAP>/`` (its own generator,
trained on that cap's kept images only, so no stage ever sees the removed images), then
writes ``DIR/sweep.json``, ``DIR/sweep.md`` and ``DIR/sweep_f1.png``: the scarce class's test F1
against the number of its real training images kept, one line per arm, with the 95 % t
interval over the paired seeds as error bars. With a cap of 1.0 (every image) in the list,
its ``classical`` arm is F_full, and ``sweep.json`` gives the share of the scarcity loss won
back at every other cap (:func:`cellgen.study.analysis.scarcity_summary`).

Example:
    >>> config = load_config(StudyConfig, "study_demo", ["sweep_caps=[4, 8, 24]"])   # doctest: +SKIP
    >>> run_sweep(config, "runs/sweep")                                               # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cellgen.runs import read_json, write_json
from cellgen.classify.metrics import t_interval
from cellgen.study import analysis
from cellgen.study.config import StudyConfig


def sweep_class(config: StudyConfig) -> str:
    """The class the sweep caps: the one ``limit_class`` key, else the one target class."""
    names = list(config.limit_class) or list(config.target_classes)
    return names[0]


def cap_label(cap: float) -> str:
    return f"cap-{cap:g}"


def cap_config(config: StudyConfig, cap: float) -> StudyConfig:
    """The study of one cap: the scarce class cut to ``cap``; no sweep, no separate reference
    (the cap 1.0 study's classical arm is it)."""
    limits = {name: value for name, value in config.limit_class.items() if name != sweep_class(config)}
    return config.replace(limit_class={**limits, sweep_class(config): cap}, sweep_caps=[], reference=False)


def run_sweep(config: StudyConfig, directory: str | Path, from_stage: str | None = None,
              until: str | None = None) -> Path:
    """Runs (or resumes) the study at every cap, then writes the sweep's summary; returns ``sweep.md``."""
    from cellgen.study.pipeline import Study, resolve_sample_paths

    config = resolve_sample_paths(config)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "sweep_config.json", config.to_dict())
    studies = {}
    for cap in config.sweep_caps:
        print(f"[sweep] {sweep_class(config)} cap {cap:g}")
        study = Study(cap_config(config, cap), directory / "caps" / cap_label(cap))
        study.run(from_stage=from_stage, until=until)
        studies[cap] = study
    if until not in (None, "report"):
        return directory / "sweep.md"
    return write_sweep(config, studies, directory)


def sweep_summary(config: StudyConfig, studies: dict[float, Any]) -> dict[str, Any]:
    """``{class, caps: [{cap, kept, arms: {arm: {mean, low, high, values}}, scarcity}]}`` (``sweep.json``)."""
    name = sweep_class(config)
    reports = {cap: read_json(study.classifier_dir / "report.json") for cap, study in studies.items()
               if (study.classifier_dir / "report.json").is_file()}
    full_caps = [cap for cap in reports if cap == 1.0]
    reference = reports[full_caps[0]] if full_caps else None
    rows = []
    for cap, study in studies.items():
        if cap not in reports:
            continue
        kept = read_json(study.directory / "data" / "counts.json")["kept"][name]
        arms = {}
        for arm in reports[cap]["arms"]:
            values = analysis.arm_values(reports[cap], arm, ["per_class_f1", name])
            stats = t_interval(values)
            arms[arm] = {"mean": stats["mean"], "low": stats["low"], "high": stats["high"], "values": values}
        row = {"cap": cap, "kept": kept, "arms": arms}
        if reference is not None and cap != 1.0:
            row["scarcity"] = analysis.scarcity_summary(reports[cap], reference, name)
        rows.append(row)
    rows.sort(key=lambda row: row["kept"])
    return {"class": name, "caps": rows}


def plot_sweep(summary: dict[str, Any], path: Path) -> Path:
    """The scarce class's F1 against the real images kept, one line per arm (error bars: 95 % intervals)."""
    from cellgen.plots import plt, save_figure

    figure, axis = plt.subplots(figsize=(6.5, 4))
    arms = list(dict.fromkeys(arm for row in summary["caps"] for arm in row["arms"]))
    for arm in arms:
        points = [(row["kept"], row["arms"][arm]) for row in summary["caps"] if arm in row["arms"]]
        xs = [kept for kept, _ in points]
        means = [stats["mean"] for _, stats in points]
        errors = [[stats["mean"] - stats["low"] if stats["low"] is not None else 0.0 for _, stats in points],
                  [stats["high"] - stats["mean"] if stats["high"] is not None else 0.0 for _, stats in points]]
        axis.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=arm)
    axis.set_xscale("log")
    axis.set_xlabel(f"real {summary['class']} training images kept")
    axis.set_ylabel(f"test F1 of {summary['class']}")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title("How many real images is a synthetic set worth? (mean, 95 % interval over seeds)", fontsize=9)
    return save_figure(figure, path)


def write_sweep(config: StudyConfig, studies: dict[float, Any], directory: Path) -> Path:
    summary = sweep_summary(config, studies)
    write_json(directory / "sweep.json", summary)
    plot_sweep(summary, directory / "sweep_f1.png")
    arms = list(dict.fromkeys(arm for row in summary["caps"] for arm in row["arms"]))
    lines = [f"# {summary['class']}: F1 against the real images kept", "",
             "Each cap is a complete study (`caps/cap-*/report.md`); mean and 95 % interval over the paired seeds.",
             "", "| cap | real images kept | " + " | ".join(arms) + " |",
             "| --- | --- | " + " | ".join("---" for _ in arms) + " |"]
    for row in summary["caps"]:
        cells = []
        for arm in arms:
            stats = row["arms"].get(arm)
            cells.append("-" if stats is None else analysis.mean_interval_text(stats["values"]))
        lines.append(f"| {row['cap']:g} | {row['kept']} | " + " | ".join(cells) + " |")
    lines += ["", "![F1 against real images kept](sweep_f1.png)", ""]
    shares = [(row["cap"], row["scarcity"]) for row in summary["caps"] if row.get("scarcity")]
    if shares:
        lines += ["Share of the scarcity loss won back (against the cap-1 study's classical arm):", ""]
        lines += [f"- cap {cap:g}: {analysis.scarcity_sentence(scarcity)}" for cap, scarcity in shares]
        lines.append("")
    path = directory / "sweep.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
