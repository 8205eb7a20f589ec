"""The augmentation study: every stage in order, resumable, through run directories.

Stages (``--from`` takes these names):

0. ``prepare``: the kept training set. The scarcity cap (``limit_class``) is applied
   once, with the study seed, and written as ``data/train_kept.csv``; every later
   stage reads that file, so the generator (base and fine-tuning), the filter and every
   classifier arm see exactly the same real images of the scarce class.
1. ``base``: train (or reuse) the base generator; with ``generator = "ddim_cond"`` the one
   class-conditional DDIM of every kept class; with ``generator = "acgan"`` a Vanilla-GAN.
2. ``finetune``: fine-tune the base model on each synthesised class (skipped for
   ``ddim_cond``, which is sampled per class with classifier-free guidance, unless
   ``finetune_conditional``: then each fine-tune is sampled with guidance too); with
   ``generator = "acgan"``, one AC-GAN (``generators/acgan``) on the frozen base networks,
   trained on the kept images of every class with their labels (Klang & Carlberg 2020, 4.5).
3. ``generate``: write the synthetic images per class (``synthetic/<class>/``; with the
   filter, ``filter_candidates`` times as many into ``synthetic_candidates/<class>/``).
4. ``filter`` (``filter_threshold > 0``; else nothing to do): a ``classical`` classifier
   trained on the kept training images only (its validation and test lists are the kept
   list too: it never sees a validation, test or removed image) scores the candidates;
   those whose class gets at least the threshold go to ``synthetic/<class>/``.
5. ``evaluate``: generator metrics (FID/KID, precision/recall, density/coverage,
   memorisation against the kept training images) and a blinded expert-test kit.
6. ``classify``: the classifier arms with paired seeds on the kept images
   (``classifier/``) and, in a scarcity study with ``reference``, the ``classical`` arm
   on the uncapped training set (``classifier_full/``, a reference only).
7. ``report``: ``report.md``, a self-contained ``report.html`` and ``report.json``
   (the paired verdicts and the ``scarcity`` block, :mod:`cellgen.study.analysis`).

Stages talk to each other only through files in the study directory. Each calls
the stage's typed library function (:mod:`cellgen.study.stages`: a trainer's
``resolve_config(RunRequest)`` + ``train``, the sampler interface, the evaluation
and classifier functions) and first appends the equivalent command line of the
per-stage script to ``commands.sh``, so a user can stop after any stage and rerun
or continue it by hand.
A finished stage writes ``stages/<name>.json``; re-running skips finished stages
and resumes an interrupted training run (``--resume``) (the loop: :mod:`cellgen.study.base`).
A config with ``positive`` set is an attribute study instead (positives are a WBCAtt selection
within a population; :mod:`cellgen.study.attribute_study`), with the same stage names.
"""

from __future__ import annotations

import csv
import math
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from cellgen.config import ConfigError, RunRequest, config_from_request, parse_set_options, resolve_preset_path
from cellgen.runs import RunDir, read_json, write_json
from cellgen.sampling import generated_set_seed
from cellgen.study import stages
from cellgen.study.base import StudyBase, StudyError, require_paths, resolve_sample_paths
from cellgen.study.config import STAGES, StudyConfig
from cellgen.study.report import write_report

__all__ = ["Study", "StudyError", "resolve_sample_paths", "run_study", "STAGES"]


class Study(StudyBase):
    """Runs the stages of a study in ``directory``.

    Args:
        config: the resolved study config.
        directory: the study directory (created).

    Example:
        >>> study = Study(load_config(StudyConfig, "study_demo"), "demo_out")  # doctest: +SKIP
        >>> study.run()                                                        # doctest: +SKIP
    """

    # Paths ---------------------------------------------------------------
    @property
    def kept_csv(self) -> Path:
        return self.directory / "data" / "train_kept.csv"

    @property
    def base_run(self) -> Path:
        return Path(self.config.base_run) if self.config.base_run else self.directory / "generators" / "base"

    def finetune_run(self, class_name: str) -> Path:
        return self.directory / "generators" / class_name

    @property
    def acgan_run(self) -> Path:
        """The AC-GAN on the frozen base (``generator = "acgan"``), one run for every class."""
        return self.directory / "generators" / "acgan"

    def generator_runs(self) -> list[tuple[str, Path]]:
        """(title, run directory) of every generator run the study trains or reuses, in order."""
        runs = [("base generator", self.base_run)]
        if self.config.acgan:
            runs.append(("AC-GAN on the frozen base", self.acgan_run))
        runs += [(f"fine-tuned on {name}", self.finetune_run(name)) for name in self._finetuned_classes()]
        return runs

    def synthetic_dir(self, class_name: str | None = None) -> Path:
        root = self.directory / "synthetic"
        return root if class_name is None else root / class_name

    def candidates_dir(self, class_name: str | None = None) -> Path:
        """Generated images before the filter (only with ``filter_threshold > 0``)."""
        root = self.directory / "synthetic_candidates"
        return root if class_name is None else root / class_name

    @property
    def filter_dir(self) -> Path:
        return self.directory / "filter"

    @property
    def classifier_dir(self) -> Path:
        return self.directory / "classifier"

    @property
    def reference_dir(self) -> Path:
        """The ``classical`` arm on the uncapped training set (a scarcity study's reference)."""
        return self.directory / "classifier_full"

    @property
    def has_reference(self) -> bool:
        return bool(self.config.reference and self.config.limit_class)

    @property
    def evaluation_dir(self) -> Path:
        return self.directory / "evaluation"

    # Validation ----------------------------------------------------------
    def check(self) -> list[str]:
        """Validates everything that can be checked before training; returns the class list."""
        from cellgen.data import DataError, DataReader

        config = self.config = resolve_sample_paths(self.config)
        require_paths(config, ("train", "val", "test"))
        try:
            classes = DataReader(config.train, image_size=config.image_size, batch_size=1).classes
            for split in ("val", "test"):
                other = DataReader(getattr(config, split), image_size=config.image_size, batch_size=1).classes
                if other != classes:
                    raise ConfigError(f"study: {split} classes {other} differ from train classes {classes}")
        except DataError as error:
            raise ConfigError(f"study: {error}") from None
        if not config.target_classes:
            raise ConfigError("study: target_classes is empty (which class should be synthesised?)")
        for class_name in list(config.target_classes) + list(config.limit_class):
            if class_name not in classes:
                raise ConfigError(f"study: class {class_name!r} is not in the data (classes: {', '.join(classes)})")
        for name in config.ignored_settings():
            print(f"warning: study: {name} is set but generator {config.generator!r} does not use it",
                  file=sys.stderr)
        # Every stage's config resolves before anything trains (unknown keys, bad values).
        generator_config = stages.generator_config_class(config.trainer_kind)
        config_from_request(generator_config, self.generator_request(config.generator_preset,
                                                                     config.generator_overrides, self.base_run))
        if config.per_class_finetune:
            config_from_request(generator_config, self.generator_request(
                config.finetune_preset or config.generator_preset, config.finetune_overrides,
                self.finetune_run(config.target_classes[0])))
        if config.acgan:
            config_from_request(stages.generator_config_class("acgan"), self.acgan_request())
        from cellgen.classify.config import ClassifierConfig

        config_from_request(ClassifierConfig, self.classifier_request(self.classifier_dir))
        if config.extractor == "inception" and not self.is_done("evaluate"):
            # Before any training: ImageNet weights offline would fail only at the evaluate stage.
            from cellgen.evaluate.features import require_inception_weights

            require_inception_weights("imagenet")
        if config.base_run:
            base = RunDir.open(config.base_run)
            if base.kind != config.trainer_kind:
                raise ConfigError(f"study: base_run {config.base_run} is a {base.kind!r} run, "
                                  f"not {config.trainer_kind!r}")
            base_size = read_json(base.path / "config.json").get("image_size")
            if config.acgan and base_size != config.generator_size:
                # The AC-GAN keeps its backbone's size; the evaluation measures at generator_image_size.
                raise ConfigError(f"study: base_run {config.base_run} is a {base_size} px run, but the generators "
                                  f"train at {config.generator_size} px; set generator_image_size={base_size}")
        return classes

    def owned_outputs(self) -> dict[str, list[Path]]:
        """The folders each stage writes (removed when the stage is re-run with ``--from``)."""
        return {
            "prepare": [self.directory / "data"],
            "base": [] if self.config.base_run else [self.base_run],
            "finetune": [self.finetune_run(name) for name in self._finetuned_classes()]
                        + ([self.acgan_run] if self.config.acgan else []),
            "generate": [self.synthetic_dir(), self.candidates_dir()],
            "filter": [self.filter_dir] + ([self.synthetic_dir()] if self.config.filtering else []),
            "evaluate": [self.evaluation_dir],
            "classify": [self.classifier_dir, self.reference_dir],
            "report": [],
        }

    # Stages --------------------------------------------------------------------
    def stage_prepare(self) -> dict[str, Any]:
        from cellgen.data import DataReader

        config = self.config
        full = DataReader(config.train, image_size=config.image_size, batch_size=1, shuffle=False,
                          seed=config.seed, on_error=config.on_error)
        kept = DataReader(config.train, image_size=config.image_size, batch_size=1, shuffle=False,
                          seed=config.seed, on_error=config.on_error, class_limits=config.limit_class or None)
        self.kept_csv.parent.mkdir(parents=True, exist_ok=True)
        rows = kept.kept_files()
        with open(self.kept_csv, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label"])
            for path, label in rows:
                writer.writerow([str(Path(path).resolve()), label])
        if full.skipped:
            full.write_skip_report(self.directory / "data")
        counts = {"original": full.class_counts(), "kept": kept.class_counts()}
        write_json(self.directory / "data" / "counts.json", counts)
        return {"kept_csv": str(self.kept_csv), **counts}

    # Requests -----------------------------------------------------------------
    def _stage_overrides(self, overrides, image_size: int | None = None) -> dict[str, Any]:
        """A stage's ``key=value`` overrides, then the study's data, size, seed, strategy (and precision)."""
        config = self.config
        return {**parse_set_options(overrides), "data": str(self.kept_csv),
                "image_size": image_size or config.image_size, "seed": config.seed, "strategy": config.strategy,
                **self._precision_overrides()}

    def generator_request(self, preset: str, overrides, out: Path, finetune_from: Path | None = None,
                          class_name: str | None = None) -> RunRequest:
        """The training request of a generator run (resumed when ``out`` holds one).

        Generators train at ``generator_image_size`` (default: the study's size); a ``ddim_cond``
        generator is forced conditional.
        """
        values = self._stage_overrides(overrides, self.config.generator_size)
        if self.config.conditional:
            values["conditional"] = True
        return RunRequest(preset=str(resolve_preset_path(preset)), overrides=values,
                          out=str(out), resume=(out / "config.json").is_file(),
                          finetune_from=str(finetune_from) if finetune_from is not None else None,
                          class_name=class_name)

    def acgan_request(self) -> RunRequest:
        """The training request of the AC-GAN on the frozen base run (``generator = "acgan"``).

        It trains on the kept training images of every class with their labels (the kept CSV,
        as every other stage) at the generators' size, which is the base run's.
        """
        config, out = self.config, self.acgan_run
        values = {**self._stage_overrides(config.acgan_overrides, config.generator_size),
                  "backbone": str(self.base_run)}
        return RunRequest(preset=str(resolve_preset_path(config.acgan_preset)), overrides=values, out=str(out),
                          resume=(out / "config.json").is_file())

    def classifier_request(self, out: Path, **fields: Any) -> RunRequest:
        """A classifier experiment on the kept training images, validated and tested on the study's splits."""
        config = self.config
        values = {**self._stage_overrides(config.classifier_overrides), "val_data": config.val,
                  "test_data": config.test, **fields}
        return RunRequest(preset=str(resolve_preset_path(config.classifier_preset)), overrides=values,
                          out=str(out), resume=(out / "config.json").is_file())

    # Stages ---------------------------------------------------------------------
    def stage_base(self) -> dict[str, Any]:
        if self.config.base_run:
            return {"run": str(self.base_run), "reused": True}
        request = self.generator_request(self.config.generator_preset, self.config.generator_overrides,
                                         self.base_run)
        stages.train_generator(self.config.trainer_kind, request, log=self.commands)
        return {"run": str(self.base_run), "reused": False, "conditional": self.config.conditional}

    def _class_names(self) -> list[str]:
        """Every class of the training data (from ``data/counts.json``, in the data's order)."""
        return list(read_json(self.directory / "data" / "counts.json")["original"])

    def synthesised_classes(self) -> list[str]:
        """The classes that receive synthetic images: the targets, or every class (``synthetic_classes = "all"``)."""
        targets = list(self.config.target_classes)
        if self.config.synthetic_classes != "all":
            return targets
        return targets + [name for name in self._class_names() if name not in targets]

    def _finetuned_classes(self) -> list[str]:
        """The classes with a fine-tuned generator run (none for an AC-GAN, or a conditional generator
        without ``finetune_conditional``)."""
        if not self.config.per_class_finetune:
            return []
        if (self.directory / "data" / "counts.json").is_file():
            return self.synthesised_classes()
        return list(self.config.target_classes)

    def stage_finetune(self) -> dict[str, Any]:
        if self.config.conditional and not self.config.per_class_finetune:
            return {"skipped": "one class-conditional generator, sampled per class (no fine-tuning)"}
        if self.config.acgan:
            if not RunDir(self.acgan_run).is_complete:
                stages.train_generator("acgan", self.acgan_request(), log=self.commands)
            return {"acgan": str(self.acgan_run), "backbone": str(self.base_run)}
        preset = self.config.finetune_preset or self.config.generator_preset
        runs = {}
        for class_name in self.synthesised_classes():
            run_path = self.finetune_run(class_name)
            if not RunDir(run_path).is_complete:
                request = self.generator_request(preset, self.config.finetune_overrides, run_path,
                                                 finetune_from=self.base_run, class_name=class_name)
                stages.train_generator(self.config.trainer_kind, request, log=self.commands)
            runs[class_name] = str(run_path)
        return {"runs": runs}

    def synthetic_counts(self) -> dict[str, int]:
        """Synthetic images wanted per class: each target class filled back to its original count (or
        ``synthetic_count``); with ``synthetic_classes = "all"`` every other class gets as many."""
        counts = read_json(self.directory / "data" / "counts.json")
        result = {}
        for class_name in self.config.target_classes:
            if self.config.synthetic_count:
                result[class_name] = self.config.synthetic_count
            else:
                missing = counts["original"][class_name] - counts["kept"][class_name]
                # Without a cap, match the real count (N&Z: synthetic = real abnormal count).
                result[class_name] = missing if missing > 0 else counts["kept"][class_name]
        if self.config.synthetic_classes == "all":
            per_class = max(result.values())
            for class_name in self.synthesised_classes():
                result.setdefault(class_name, per_class)
        return result

    def generation_counts(self) -> dict[str, int]:
        """Images to generate per class: the wanted count, times ``filter_candidates`` with the filter."""
        counts = self.synthetic_counts()
        if not self.config.filtering:
            return counts
        return {name: int(math.ceil(count * self.config.filter_candidates)) for name, count in counts.items()}

    def generator_run_of(self, class_name: str) -> Path:
        """The generator run that draws ``class_name``: the conditional base run, the AC-GAN, or the
        class's fine-tune (of an unconditional or, with ``finetune_conditional``, a conditional base)."""
        if self.config.acgan:
            return self.acgan_run
        return self.finetune_run(class_name) if self.config.per_class_finetune else self.base_run

    @property
    def class_conditional(self) -> bool:
        """Whether one run draws every class (``generate.py --class``)."""
        return self.config.conditional or self.config.acgan

    def stage_generate(self) -> dict[str, Any]:
        config = self.config
        counts = self.generation_counts()
        diffusion = config.trainer_kind == "ddim"
        for index, (class_name, count) in enumerate(counts.items()):
            out = (self.candidates_dir if config.filtering else self.synthetic_dir)(class_name)
            if out.exists():
                shutil.rmtree(out)  # a half-written folder from an interrupted run
            request = stages.GenerationRequest(
                run=str(self.generator_run_of(class_name)), out=str(out), count=count,
                seed=config.seed + 1000 * (index + 1), steps=config.sample_steps if diffusion else None,
                class_name=class_name if self.class_conditional else None,
                guidance=config.guidance if config.conditional else None,
                sampler=(config.sampler or None) if config.conditional else None)
            stages.generate_images(request, log=self.commands)
        folder = self.candidates_dir() if config.filtering else self.synthetic_dir()
        return {"counts": counts, "folder": str(folder)}

    # Filter ------------------------------------------------------------------------
    def filter_request(self) -> RunRequest:
        """The filter's classifier: the ``classical`` arm on the kept training images, which are also its
        validation and test lists, so it never sees a validation, test or removed image."""
        kept = str(self.kept_csv)
        return self.classifier_request(self.filter_dir / "classifier", arms=["classical"], seeds=1,
                                       save_models=True, val_data=kept, test_data=kept)

    def stage_filter(self) -> dict[str, Any]:
        from cellgen.study.filtering import filter_images

        config = self.config
        if not config.filtering:
            return {"filtered": False}
        model = stages.train_domain_extractor(self.filter_request(), log=self.commands)
        self.commands.note(f"filter: keep generated images whose class probability under {model} is at least "
                           f"{config.filter_threshold} ({self.filter_dir / 'summary.json'})")
        stages.fresh_session()
        summary = filter_images(model, {name: self.candidates_dir(name) for name in self.synthetic_counts()},
                                {name: self.synthetic_dir(name) for name in self.synthetic_counts()},
                                self.synthetic_counts(), config.filter_threshold, config.image_size,
                                self.filter_dir)
        return {"filtered": True, "classifier": str(model), "summary": summary}

    def available_synthetic(self) -> dict[str, int]:
        """Synthetic images per class the classifier can draw from (after the filter)."""
        counts = self.synthetic_counts()
        if not self.config.filtering:
            return counts
        return {name: min(count, len(list(self.synthetic_dir(name).glob("*.png")))) for name, count in counts.items()}

    def domain_extractor(self) -> Path:
        """Trains (once) a classifier on the kept real training images; its features feed FID/KID.

        It sees only the kept training images (validation picks its epoch), never
        synthetic or test images.
        """
        request = self.classifier_request(self.evaluation_dir / "feature_classifier", arms=["baseline"], seeds=1,
                                          save_models=True)
        return stages.train_domain_extractor(request, log=self.commands)

    def stage_evaluate(self) -> dict[str, Any]:
        from cellgen.evaluate.tasks import ExpertKitOptions, GeneratorEvaluation

        config = self.config
        extractor = config.extractor
        if extractor == "domain":
            extractor = str(self.domain_extractor())
        outputs: dict[str, Any] = {"extractor": config.extractor if config.extractor != "domain"
                                   else f"a domain classifier trained on the kept real images ({extractor})"}
        for index, class_name in enumerate(config.target_classes):
            generated = str(self.synthetic_dir(class_name))
            if extractor != "none":
                # At the generator's size: enlarging generated images would only measure the blur.
                options = GeneratorEvaluation(
                    real=config.val, out=str(self.evaluation_dir / class_name), generated=generated,
                    extractor=extractor, n=config.evaluation_count or 10_000, seeds=config.evaluation_seeds,
                    class_name=class_name, train=str(self.kept_csv), size=config.generator_size, overwrite=True,
                    progress=False, cache_dir=str(self.evaluation_dir / "feature_cache"))
                stages.evaluate_generated_images(options, log=self.commands)
            if config.expert_kit_size:
                kit = self.directory / "expert_kit" / class_name
                stages.make_expert_kit(ExpertKitOptions(
                    real=config.val, synthetic=generated, out=str(kit), n=config.expert_kit_size,
                    seed=config.seed + index, class_name=class_name, overwrite=True), log=self.commands)
                outputs.setdefault("expert_kits", {})[class_name] = str(kit)
        return outputs

    def reference_request(self) -> RunRequest:
        """The reference: the ``classical`` arm on the uncapped training set, same seeds and recipe."""
        return self.classifier_request(self.reference_dir, data=self.config.train, arms=["classical"],
                                       seeds=self.config.seeds)

    def stage_classify(self) -> dict[str, Any]:
        config = self.config
        fields: dict[str, Any] = {"arms": list(config.arms), "seeds": config.seeds}
        if any("synthetic" in arm for arm in config.arms):
            wanted, available = self.synthetic_counts(), self.available_synthetic()
            if len(set(wanted.values())) > 1:
                raise StudyError("stage 'classify': the target classes need different synthetic counts "
                                 f"({wanted}); set synthetic_count to one number")
            count = min(available.values())
            if count == 0:
                raise StudyError(f"stage 'classify': the filter kept no synthetic image of some class ({available}); "
                                 "lower filter_threshold or raise filter_candidates")
            fields.update(synthetic=str(self.synthetic_dir()), synthetic_from="", synthetic_classes=list(wanted),
                          synthetic_count=count, synthetic_match_positive=False)
            if config.match_synthetic_resolution and config.generator_size < config.image_size:
                fields.update(match_synthetic_size=config.generator_size)
        stages.run_classifier_experiment(self.classifier_request(self.classifier_dir, **fields),
                                         log=self.commands)
        report = self.classifier_dir / "report.json"
        if not report.is_file():
            raise StudyError(f"stage 'classify': {report} was not written")
        outputs = {"report": str(report)}
        if self.has_reference:
            stages.run_classifier_experiment(self.reference_request(), log=self.commands)
            outputs["reference_report"] = str(self.reference_dir / "report.json")
        return outputs

    def stage_report(self) -> dict[str, Any]:
        paths = write_report(self)
        return {key: str(value) for key, value in paths.items()}


def run_study(config: StudyConfig, directory: str | Path, from_stage: str | None = None,
              until: str | None = None) -> Path:
    """Runs (or resumes) a study; returns the path of ``report.md``
    (a study with ``sweep_caps`` runs through :func:`cellgen.study.sweep.run_sweep`; one with
    ``positive`` is an attribute study, :class:`cellgen.study.attribute_study.AttributeStudy`)."""
    if config.sweep_caps:
        raise ConfigError("sweep_caps is set: run the sweep with cellgen.study.sweep.run_sweep (run_study.py does)")
    if config.attribute_study:
        from cellgen.study.attribute_study import AttributeStudy

        return AttributeStudy(config, directory).run(from_stage=from_stage, until=until)
    return Study(config, directory).run(from_stage=from_stage, until=until)


StageFunction = Callable[[Study], dict[str, Any]]
