"""Every script against a corpus of bad inputs (issue 21): no traceback, documented exit codes,
no silent acceptance.

The corpus (``tests/bad_inputs_corpus.py``) is written by a fixture: broken and unusual image
files, CSVs, folders that are not runs, damaged run files. Each case runs a script's
``main(argv)`` in this process and fails on

- an exception out of ``main`` (the user would see a traceback), or the word "Traceback";
- an exit code other than the documented ones (0, 2 = bad input, 3 = non-finite loss) or
  other than the case's;
- a failure that is not one ``error: ...`` line (argparse's usage errors: its own last line),
  or one that does not name what is wrong (``says``);
- questionable input accepted without a ``warning:`` line (``warns``: an image upscaled, files
  skipped, a rare label), or a ``warning:`` where none is due (``quiet``: valid formats that are
  converted, a non-ASCII file name; and beside an error that stops a run before it starts);
- a run folder written before a data error was found (``no_run``), or left looking like a run
  that has something to resume after one (``attempt_only``).

Most cases fail before any training; the few that train use 16 px images, one epoch and tiny
networks.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import traceback
from pathlib import Path

import pytest

from tests.bad_inputs_corpus import build_corpus

OLD_RUNS = Path(__file__).resolve().parent / "fixtures" / "old_runs"
WBCATT = Path(__file__).resolve().parents[1] / "cellgen" / "sample_data" / "pbc-64" / "wbcatt.csv"
DOCUMENTED_CODES = {0, 2, 3}

DDIM = ["--config", "ddim_fast", "--size", "16", "--batch-size", "16", "--precision", "fp32", "--epochs", "1",
        "--set", "depth=2", "--set", "base_width=8", "--set", "block_depth=1", "--set", "grid_size=4",
        "--set", "diffusion_steps=2", "--set", "normalizer_batches=1", "--set", "sample_every=0", "--quiet"]
GAN = ["--config", "gan_fast", "--size", "16", "--batch-size", "16", "--precision", "fp32", "--epochs", "1",
       "--set", "depth_g=16", "--set", "depth_d=8", "--set", "sample_count=4", "--quiet"]
ACGAN = ["--config", "acgan_fast", "--backbone", "{old_gan}", "--batch-size", "16", "--epochs", "1",
         "--set", "head_units=16", "--set", "samples_per_class=2", "--quiet"]
ENCODER = ["--generator", "{old_gan}", "--batch-size", "16", "--epochs", "1", "--quiet"]
CVAE = ["--config", "matos2025_cvae28", "--size", "16", "--batch-size", "16", "--epochs", "1",
        "--set", "latent_dim=8", "--set", "encoder_filters=[8,16]", "--set", "samples_per_class=2", "--quiet"]
CLASSIFIER = ["--config", "classifier_fast", "--size", "16", "--batch-size", "16", "--epochs", "1",
              "--arms", "baseline", "--seeds", "1", "--set", "cnn_width=4", "--set", "cnn_blocks=2", "--quiet"]
TRAINERS = {"train_ddim": DDIM, "train_vanilla_gan": GAN, "train_acgan": ACGAN, "train_latent_encoder": ENCODER,
            "train_cvae": CVAE}


@dataclasses.dataclass
class Case:
    id: str
    script: str                      # module under cellgen/cli
    argv: list[str]                  # {name}: a corpus path, {out}, {old_gan} ... (see _expand)
    code: int                        # the expected exit code
    says: tuple[str, ...] = ()       # substrings of the output (the error line, when code != 0)
    warns: tuple[str, ...] = ()      # each must be in some "warning: ..." line
    quiet: bool = False              # no "warning: ..." line at all
    no_run: bool = False             # {out} must not exist afterwards
    attempt_only: bool = False       # {out} may exist but holds no checkpoint and no COMPLETE.json


def data_cases() -> list[Case]:
    """The same data problems for every trainer: they fail before a run folder is written."""
    cases = []
    for script, tiny in TRAINERS.items():
        cases += [
            Case(f"{script}-missing-path", script, [*tiny, "--data", "{missing}", "--out", "{out}"], 2,
                 says=("does-not-exist", "no such file or folder"), no_run=True),
            Case(f"{script}-empty-class-folder", script, [*tiny, "--data", "{empty_class}", "--out", "{out}"], 2,
                 says=("lymphocyte", "has no images"), no_run=True),
            Case(f"{script}-csv-label-typo-with-classes", script,
                 [*tiny, "--data", "{csv_unknown_label}", "--classes", "basophil,eosinophil", "--out", "{out}"], 2,
                 says=("line 17", "'basophill'", "did you mean 'basophil'"), no_run=True),
        ]
    classifier = [*CLASSIFIER, "--val", "{good}", "--test", "{good}", "--out", "{out}"]
    cases += [
        Case("evaluate_classifier-missing-path", "evaluate_classifier", [*classifier, "--train", "{missing}"], 2,
             says=("does-not-exist", "no such file or folder"), no_run=True),
        Case("evaluate_classifier-empty-class-folder", "evaluate_classifier",
             [*classifier, "--train", "{empty_class}"], 2, says=("lymphocyte", "has no images"), no_run=True),
        Case("evaluate_classifier-csv-label-typo-with-classes", "evaluate_classifier",
             [*classifier, "--train", "{csv_unknown_label}", "--classes", "basophil,eosinophil"], 2,
             says=("'basophill'",), no_run=True),
        Case("evaluate_classifier-one-class-only", "evaluate_classifier",
             [*CLASSIFIER, "--train", "{one_class}", "--val", "{one_class}", "--test", "{one_class}", "--out", "{out}"],
             2, says=("one class only",), no_run=True),
        Case("train_acgan-one-class-only", "train_acgan", [*ACGAN, "--data", "{one_class}", "--out", "{out}"], 2,
             says=("one class only",), no_run=True),
    ]
    return cases


CASES = data_cases() + [
    # Files the reader finds when it lists the data (before any run folder).
    Case("zero-byte-file", "train_ddim", [*DDIM, "--data", "{zero_byte}", "--out", "{out}"], 2,
         says=("empty.jpg", "0 bytes"), no_run=True),
    Case("symlink-loop", "train_ddim", [*DDIM, "--data", "{symlink_loop}", "--out", "{out}"], 2,
         says=("loop_a.jpg", "symbolic links"), no_run=True),
    Case("csv-missing-column", "train_ddim", [*DDIM, "--data", "{csv_missing_column}", "--out", "{out}"], 2,
         says=("missing column 'label'",), no_run=True),
    Case("csv-missing-file", "train_vanilla_gan", [*GAN, "--data", "{csv_missing_file}", "--out", "{out}"], 2,
         says=("not-there.jpg", "line 18"), no_run=True),
    Case("unknown-class-ddim", "train_ddim", [*DDIM, "--data", "{good}", "--class", "monocyte", "--out", "{out}"], 2,
         says=("--class", "'monocyte'", "basophil, eosinophil"), no_run=True),
    Case("unknown-class-gan", "train_vanilla_gan",
         [*GAN, "--data", "{good}", "--class", "basophill", "--out", "{out}"], 2, says=("--class", "'basophill'"),
         no_run=True),
    Case("listed-class-missing", "train_ddim",
         [*DDIM, "--data", "{good}", "--classes", "basophil,eosinophil,monocyte", "--out", "{out}"], 2,
         says=("'monocyte'", "has no folder"), no_run=True),
    # Files found only when decoded, while training: one line naming the file; nothing to resume.
    Case("text-as-jpeg-gan", "train_vanilla_gan", [*GAN, "--data", "{text_as_jpeg}", "--out", "{out}"], 2,
         says=("notes.jpg", "not a readable image"), attempt_only=True),
    Case("truncated-jpeg-ddim", "train_ddim", [*DDIM, "--data", "{truncated_jpeg}", "--out", "{out}"], 2,
         says=("truncated.jpg",), attempt_only=True),
    # Questionable input that is accepted must say so; valid input that is converted need not.
    Case("converted-formats-and-non-ascii-name-resumed-into-a-missing-folder", "train_vanilla_gan",
         [*GAN, "--data", "{formats}", "--out", "{out}", "--resume"], 0, says=("holds no run yet",), quiet=True),
    Case("five-pixel-image-upscaled", "train_vanilla_gan", [*GAN, "--data", "{tiny_image}", "--out", "{out}"], 0,
         warns=("five_by_five.png", "upscaled")),
    Case("unreadable-file-skipped", "train_vanilla_gan",
         [*GAN, "--data", "{text_as_jpeg}", "--set", "on_error=skip", "--out", "{out}"], 0,
         warns=("skipped 1 unreadable file", "skipped_files.csv")),
    Case("rare-csv-label", "train_vanilla_gan", [*GAN, "--data", "{csv_rare_label}", "--out", "{out}"], 0,
         warns=("'basophill'", "a typo?", "did you mean 'basophil'")),
    # Options and config keys.
    Case("unknown-set-key", "train_ddim", [*DDIM, "--data", "{good}", "--set", "colour=1", "--out", "{out}"], 2,
         says=("unknown config key 'colour'", "valid keys"), no_run=True),
    Case("mistyped-set-key", "train_ddim",
         [*DDIM, "--data", "{good}", "--set", "learnig_rate=1e-3", "--out", "{out}"], 2,
         says=("'learnig_rate' (did you mean 'learning_rate'?)",), no_run=True),
    Case("unknown-sample-threshold", "train_ddim",
         [*DDIM, "--data", "{good}", "--set", "sample_threshold=soft", "--out", "{out}"], 2,
         says=("sample_threshold must be one of none, static, dynamic, got 'soft'",), no_run=True),
    Case("threshold-percentile-out-of-range", "train_ddim",
         [*DDIM, "--data", "{good}", "--set", "threshold_percentile=0.2", "--out", "{out}"], 2,
         says=("threshold_percentile must be in [0.5, 1], got 0.2",), no_run=True),
    Case("set-without-value", "train_cvae", [*CVAE, "--data", "{good}", "--set", "kl_weight", "--out", "{out}"], 2,
         says=("--set expects key=value",), no_run=True),
    Case("overflowing-epochs", "train_ddim",  # no --epochs flag here: it would win over --set
         ["--config", "ddim_fast", "--data", "{good}", "--set", "epochs=1e999", "--out", "{out}"], 2,
         says=("epochs: expected int",), no_run=True),
    Case("negative-epochs", "train_vanilla_gan", [*GAN, "--data", "{good}", "--epochs", "-1", "--out", "{out}"], 2,
         says=("--epochs must be >= 0",), no_run=True),
    Case("negative-seed", "train_ddim", [*DDIM, "--data", "{good}", "--seed", "-1", "--out", "{out}"], 2,
         says=("--seed must be",), no_run=True),
    Case("huge-seed", "train_cvae", [*CVAE, "--data", "{good}", "--seed", str(2**40), "--out", "{out}"], 2,
         says=("--seed must be",), no_run=True),
    Case("zero-batch-size", "train_latent_encoder", [*ENCODER, "--data", "{good}", "--batch-size", "0",
                                                     "--out", "{out}"], 2, says=("--batch-size must be",), no_run=True),
    Case("huge-image-size", "train_ddim", [*DDIM, "--data", "{good}", "--size", "1000000", "--out", "{out}"], 2,
         says=("--size must be in [8, 4096]",), no_run=True),
    Case("negative-learning-rate", "train_vanilla_gan",
         [*GAN, "--data", "{good}", "--set", "g_learning_rate=-1", "--out", "{out}"], 2,
         says=("g_learning_rate must be > 0",), no_run=True),
    Case("nan-learning-rate", "train_cvae", [*CVAE, "--data", "{good}", "--set", "learning_rate=nan", "--out", "{out}"],
         2, says=("learning_rate", "finite"), no_run=True),
    Case("negative-workers", "train_ddim", [*DDIM, "--data", "{good}", "--set", "workers=-1", "--out", "{out}"], 2,
         says=("workers must be >= 0",), no_run=True),
    Case("not-an-int", "train_ddim", [*DDIM, "--data", "{good}", "--epochs", "two", "--out", "{out}"], 2,
         says=("--epochs", "invalid int"), no_run=True),
    Case("unknown-strategy", "train_vanilla_gan", [*GAN, "--data", "{good}", "--strategy", "tpu", "--out", "{out}"], 2,
         says=("unknown strategy 'tpu'",), no_run=True),
    Case("unknown-preset", "train_ddim", ["--config", "ddim_fats", "--data", "{good}", "--out", "{out}"], 2,
         says=("config file not found: ddim_fats", "did you mean ddim_fast"), no_run=True),
    Case("preset-of-another-stage", "train_ddim", ["--config", "gan_fast", "--data", "{good}", "--out", "{out}"], 2,
         says=("'vanilla_gan'",), no_run=True),
    Case("invalid-toml-preset", "train_cvae", ["--config", "{bad_preset}", "--data", "{good}", "--out", "{out}"], 2,
         says=("bad_preset.toml", "invalid TOML"), no_run=True),
    Case("finetune-from-a-data-folder", "train_ddim",
         ["--config", "nz2023_ddim_finetune", "--finetune-from", "{not_a_run}", "--class", "basophil",
          "--out", "{out}"], 2, says=("--finetune-from", "not a run directory"), no_run=True),
    Case("finetune-from-a-missing-folder", "train_vanilla_gan",
         ["--config", "nz2023_gan_finetune", "--finetune-from", "{missing}", "--class", "basophil", "--out", "{out}"],
         2, says=("--finetune-from",), no_run=True),
    Case("finetune-from-another-kind", "train_ddim",
         ["--finetune-from", "{old_gan}", "--class", "basophil", "--out", "{out}"], 2, says=("'vanilla_gan'",),
         no_run=True),
    Case("backbone-not-a-run", "train_acgan", [*ACGAN[:2], "--backbone", "{not_a_run}", "--data", "{good}",
                                               "--out", "{out}"], 2, says=("not_a_run",), no_run=True),
    Case("generator-not-a-run", "train_latent_encoder", ["--generator", "{not_a_run}", "--data", "{good}",
                                                         "--out", "{out}"], 2, says=("not_a_run",), no_run=True),
    Case("out-is-a-file", "train_ddim", [*DDIM, "--data", "{good}", "--out", "{a_file}"], 2,
         says=("a_file.txt", "not a directory")),
    # --resume on what is not a run.
    Case("resume-missing-folder", "train_ddim", ["--out", "{missing}", "--resume"], 2,
         says=("--resume", "holds no run yet")),
    Case("resume-empty-folder", "train_vanilla_gan", ["--out", "{empty_folder}", "--resume"], 2,
         says=("--resume", "holds no run yet")),
    Case("resume-a-data-folder", "train_cvae", ["--out", "{not_a_run}", "--resume"], 2,
         says=("not a cellgen run",)),
    Case("resume-damaged-config", "train_ddim", ["--out", "{broken_run}", "--resume"], 2,
         says=("config.json", "damaged")),
    Case("keep-set-without-resume", "train_ddim", [*DDIM, "--data", "{good}", "--keep-set", "--out", "{out}"], 2,
         says=("--keep-set",), no_run=True),
    # generate.py
    Case("generate-from-a-data-folder", "generate", ["--run", "{not_a_run}", "--n", "4", "--out", "{out}"], 2,
         says=("not a cellgen run",), no_run=True),
    Case("generate-from-a-missing-folder", "generate", ["--run", "{missing}", "--n", "4", "--out", "{out}"], 2,
         says=("does-not-exist",), no_run=True),
    Case("generate-from-a-damaged-run", "generate", ["--run", "{broken_run}", "--n", "4", "--out", "{out}"], 2,
         says=("damaged",), no_run=True),
    Case("generate-zero-images", "generate", ["--run", "{old_gan}", "--n", "0", "--out", "{out}"], 2,
         says=("--n must be >= 1",), no_run=True),
    Case("generate-negative-count", "generate", ["--run", "{old_gan}", "--n", "-1", "--out", "{out}"], 2,
         says=("--n must be >= 1",), no_run=True),
    Case("generate-negative-per-class", "generate", ["--run", "{old_acgan}", "--per-class", "-3", "--out", "{out}"],
         2, says=("--per-class must be >= 1",), no_run=True),
    Case("generate-negative-seed", "generate", ["--run", "{old_gan}", "--n", "2", "--seed", "-1", "--out", "{out}"],
         2, says=("--seed must be >= 0",), no_run=True),
    Case("generate-unknown-class", "generate",
         ["--run", "{old_acgan}", "--n", "2", "--class", "basophill", "--out", "{out}"], 2,
         says=("--class basophill", "basophil, eosinophil"), no_run=True),
    Case("generate-class-of-an-unconditional-run", "generate",
         ["--run", "{old_gan}", "--n", "2", "--class", "basophil", "--out", "{out}"], 2,
         says=("--class needs a conditional model",), no_run=True),
    Case("generate-unsaved-epoch", "generate", ["--run", "{old_gan}", "--n", "2", "--epoch", "77", "--out", "{out}"],
         2, says=("epoch 77", "saved epochs: 1"), no_run=True),
    Case("generate-zero-steps", "generate", ["--run", "{old_ddim}", "--n", "2", "--steps", "0", "--out", "{out}"], 2,
         says=("--steps must be >= 1",), no_run=True),
    Case("generate-n-and-per-class", "generate",
         ["--run", "{old_acgan}", "--n", "2", "--per-class", "2", "--out", "{out}"], 2, says=("exactly one of",),
         no_run=True),
    # Attributes (issue 18).
    Case("generate-attr-of-a-run-without-attributes", "generate",
         ["--run", "{old_ddim}", "--n", "2", "--attr", "nucleus_shape=segmented-multilobed", "--out", "{out}"], 2,
         says=("--attr needs a diffusion run conditioned on attributes",), no_run=True),
    Case("generate-attr-of-a-gan", "generate",
         ["--run", "{old_gan}", "--n", "2", "--attr", "nucleus_shape=segmented-multilobed", "--out", "{out}"], 2,
         says=("is a vanilla_gan run",), no_run=True),
    Case("select-without-an-attribute-table", "train_ddim",
         [*DDIM, "--data", "{good}", "--select", "nucleus_shape=segmented-multilobed", "--out", "{out}"], 2,
         says=("select needs an attribute table",), no_run=True),
    Case("select-an-unknown-value", "train_ddim",
         [*DDIM, "--data", "{good}", "--attributes-csv", str(WBCATT), "--select", "nucleus_shape=multilobed",
          "--out", "{out}"], 2, says=("--select: nucleus_shape has no value 'multilobed'",), no_run=True),
    Case("attributes-csv-missing", "train_ddim",
         [*DDIM, "--data", "{good}", "--attributes-csv", "{missing}", "--set", "conditional=true",
          "--set", "attributes=nucleus_shape", "--out", "{out}"], 2, says=("no such attribute table",), no_run=True),
    # The other scripts.
    Case("evaluate-generator-missing-real", "evaluate_generator",
         ["--real", "{missing}", "--generated", "{good}", "--out", "{out}"], 2, says=("does-not-exist",), no_run=True),
    Case("evaluate-generator-run-not-a-run", "evaluate_generator",
         ["--real", "{good}", "--run", "{not_a_run}", "--out", "{out}"], 2, says=("not a cellgen run",), no_run=True),
    Case("evaluate-generator-zero-images", "evaluate_generator",
         ["--real", "{good}", "--generated", "{good}", "--n", "0", "--out", "{out}"], 2, says=("--n",), no_run=True),
    Case("compare-generators-missing-data", "compare_generators", ["--data", "{missing}", "--out", "{out}"], 2,
         says=("does-not-exist",), no_run=True),
    Case("compare-generators-zero-epochs", "compare_generators",
         ["--data", "{good}", "--out", "{out}", "--epochs", "0"], 2, says=("--epochs",), no_run=True),
    Case("expert-kit-missing-real", "expert_test", ["make", "--real", "{missing}", "--synthetic", "{good}",
                                                    "--out", "{out}"], 2, says=("does-not-exist",), no_run=True),
    Case("expert-kit-negative-n", "expert_test", ["make", "--real", "{good}", "--synthetic", "{good}", "--n", "-4",
                                                  "--out", "{out}"], 2, says=("--n",), no_run=True),
    Case("expert-score-not-a-kit", "expert_test", ["score", "{not_a_run}", "{a_file}"], 2, says=("not an expert",)),
    Case("explore-latent-encoder-not-a-run", "explore_latent",
         ["reconstruct", "--encoder", "{not_a_run}", "--data", "{good}", "--out", "{out}.png"], 2,
         says=("not a cellgen run",)),
    Case("explore-latent-zero-steps", "explore_latent",
         ["interpolate", "--generator", "{old_gan}", "--seeds", "1", "2", "--steps", "0", "--out", "{out}.png"], 2,
         says=("--steps",)),
    Case("study-unknown-preset", "run_study", ["--config", "no_such_study", "--out", "{out}"], 2,
         says=("no_such_study",), no_run=True),
    Case("data-tool-missing-path", "data_tool", ["scan", "{missing}"], 2, says=("does-not-exist",)),
    Case("data-tool-text-as-jpeg", "data_tool", ["scan", "{text_as_jpeg}"], 2, says=("notes.jpg",)),
    Case("data-tool-skips-and-lists", "data_tool", ["scan", "{text_as_jpeg}", "--on-error", "skip"], 0,
         says=("unreadable files: 1", "notes.jpg")),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, str]:
    paths = {name: str(path) for name, path in build_corpus(tmp_path_factory.mktemp("bad-inputs")).items()}
    paths.update({f"old_{name}": str(OLD_RUNS / name) for name in ("gan", "acgan", "ddim", "cvae")})
    return paths


def _expand(argv: list[str], values: dict[str, str]) -> list[str]:
    return [re.sub(r"\{(\w+)\}", lambda match: values[match.group(1)], item) for item in argv]


def run_script(script: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """``cellgen.cli.SCRIPT.main(argv)`` in this process: (exit code, stdout, stderr); an exception
    out of ``main`` fails the test with its traceback."""
    main = importlib.import_module(f"cellgen.cli.{script}").main
    try:
        code = main(argv)
    except SystemExit as exit_request:  # argparse: usage errors exit 2
        code = exit_request.code if isinstance(exit_request.code, int) else 2
    except BaseException:  # noqa: BLE001 - what a user would see as a traceback
        captured = capsys.readouterr()
        pytest.fail(f"{script} {' '.join(argv)} raised (a traceback for the user):\n{traceback.format_exc()}\n"
                    f"stdout:\n{captured.out[-2000:]}\nstderr:\n{captured.err[-2000:]}")
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _lines(text: str) -> list[str]:
    return [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CELLGEN_DEBUG", raising=False)  # it would show tracebacks on purpose
    out = tmp_path / "out"
    argv = _expand(case.argv, {**corpus, "out": str(out)})
    code, stdout, stderr = run_script(case.script, argv, capsys)
    shown = f"\n$ {case.script}.py {' '.join(argv)}\nexit {code}\nstdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}"

    assert "Traceback (most recent call last)" not in stdout + stderr, shown
    assert code in DOCUMENTED_CODES, f"undocumented exit code {code}" + shown
    assert code == case.code, f"expected exit {case.code}" + shown
    errors = [line for line in _lines(stderr) if re.match(r"(\S+: )?error: ", line)]
    if code == 0:
        assert not errors, shown
        text = stdout + stderr
    else:
        assert len(errors) == 1 and _lines(stderr)[-1] == errors[0], "not one error line, last" + shown
        text = errors[0]
    for fragment in case.says:
        assert fragment in text, f"{fragment!r} not said" + shown
    warnings = [line for line in _lines(stderr) if line.startswith("warning: ")]
    for fragment in case.warns:
        assert any(fragment in line for line in warnings), f"no warning with {fragment!r}" + shown
    if case.quiet or (code == 2 and case.no_run and not case.warns):
        assert not warnings, "a warning for valid input (or beside the error that stops the run)" + shown
    if case.no_run:
        assert not out.exists(), f"{out} was written before the error" + shown
    if case.attempt_only and out.exists():
        assert not (out / "COMPLETE.json").exists(), shown
        assert not any((out / "checkpoints").glob("epoch-*")), "a run left with something to resume" + shown


def test_the_corpus_covers_the_issue_list(corpus):
    """Issue 21's acceptance list, against the corpus and the cases."""
    ids = " ".join(case.id for case in CASES)
    for name in ("zero_byte", "text_as_jpeg", "truncated_jpeg", "formats", "tiny_image", "empty_class", "missing",
                 "csv_missing_column", "csv_missing_file", "csv_unknown_label", "one_class", "symlink_loop"):
        assert name in corpus
    for words in ("zero-byte", "text-as-jpeg", "truncated-jpeg", "converted-formats", "non-ascii", "five-pixel",
                  "empty-class-folder", "missing-path", "csv-missing-column", "csv-missing-file", "csv-label-typo",
                  "one-class-only", "symlink-loop", "unknown-set-key", "mistyped-set-key", "negative-seed",
                  "huge-image-size", "unknown-preset", "finetune-from-a-data-folder", "unknown-class",
                  "resume-missing-folder", "resume-empty-folder", "generate-from-a-data-folder",
                  "generate-zero-images", "generate-negative-count"):
        assert words in ids, words
    formats = Path(corpus["formats"]) / "basophil"
    assert {"grayscale.png", "rgba.png", "sixteen_bit.png"} <= {path.name for path in formats.iterdir()}
    assert json.loads((Path(corpus["good"]).parent / "manifest.json").read_text())
