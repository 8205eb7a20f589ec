"""The attribute study: N&Z's abnormality experiment with a WBCAtt attribute as the abnormality.

Nilsson & Zettergren (2023) trained a diffusion base model on neutrophils, fine-tuned it on each
abnormality and asked whether a one-against-the-rest classifier (normal against abnormal, their
Table 4) improves with synthetic abnormal cells. PBC has no abnormal cells; WBCAtt's attributes
(Tsutsui, Pang and Wen 2023) name subsets that stand in for them, e.g. the multilobed neutrophils
(``nucleus_shape = segmented-multilobed``) for the hypersegmented ones. A study config with
``positive`` set runs it (``run_study.py --config study_wbcatt_multilobed``), with the stages of
:data:`cellgen.study.config.STAGES`:

0. ``prepare``: ``data/population_train.csv``, the population's training images (``population``,
   e.g. ``class=neutrophil``), the only images any generator, filter or classifier fit reads;
   ``data/binary/{train,val,test}.csv``, the binary lists (``positive_label`` when the image matches
   ``positive``, ``negative_label`` otherwise: :func:`cellgen.evaluate.attributes.write_binary_file_list`).
1. ``base``: the attribute-conditioned DDIM (``generators/conditional``: the class and the
   selection's attributes as conditions, trained once on the population) and N&Z's base DDIM on the
   population (``generators/base``, unconditional); same preset and budget.
2. ``finetune``: the base fine-tuned on the positive training images (``generators/finetuned``,
   ``train_ddim.py --finetune-from BASE --select ...``): N&Z's route, the reference.
3. ``generate``: as many positives from each generator as there are real positive training images
   (or ``synthetic_count``): ``synthetic/<generator>/<positive_label>/`` (``generate.py --attr`` for
   the conditional one, with classifier-free guidance).
4. ``filter``: none in this study (recorded as such).
5. ``evaluate``: attribute fidelity: per attribute of the selection, a classifier trained on the
   population's real training images only; its share of real validation images of the requested
   value called so (the ceiling), and the share of each generator's images called so; and a
   blinded real-vs-synthetic expert kit per generator (real validation positives).
6. ``classify``: the binary experiment (``mode = "binary"``, validation positives oversampled to the
   negative count as N&Z did): the real-only arms once (``classifier/real``) and the synthetic arms
   once per generator (``classifier/<generator>``), every experiment with the same seeds, so each
   synthetic arm is paired per seed with its real-only counterpart (``synthetic`` with
   ``baseline``, ``classical+synthetic`` with ``classical``) and the two generators with each other:
   F1 of the positive class and accuracy of the normal (negative) class, 95 % paired t intervals
   (:func:`cellgen.classify.metrics.paired_difference`): ``classifier/comparison.json``.
7. ``report``: ``report.md``/``.html``/``.json`` (:mod:`cellgen.study.attribute_report`).

Every stage goes through :mod:`cellgen.study.stages` and writes its command line to ``commands.sh``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from cellgen.classify.config import SYNTHETIC_ARMS
from cellgen.config import (ConfigError, RunRequest, config_from_request, load_config, parse_set_options,
                            resolve_preset_path)
from cellgen.runs import RunDir, read_json, write_json
from cellgen.study import stages
from cellgen.study.attribute_report import (REAL_EXPERIMENT, TITLES as GENERATOR_TITLES, classifier_comparison,
                                            write_attribute_report)
from cellgen.study.base import StudyBase, StudyError, require_paths, resolve_sample_paths

SAMPLE_PREFIX = "sample:"


def resolve_sample_table(value: str) -> str:
    """``sample:wbcatt.csv`` -> the table shipped next to the embedded sample's splits."""
    if not value.startswith(SAMPLE_PREFIX):
        return value
    from cellgen.sample_data import sample_path

    return str(sample_path("train").parent / value[len(SAMPLE_PREFIX):])


class AttributeStudy(StudyBase):
    """Runs an attribute study in ``directory`` (see the module docstring).

    Example:
        >>> config = load_config(StudyConfig, "study_demo_wbcatt")               # doctest: +SKIP
        >>> AttributeStudy(config, "demo_out/wbcatt").run()                       # doctest: +SKIP
    """

    # Paths ---------------------------------------------------------------------------------
    @property
    def population_csv(self) -> Path:
        return self.directory / "data" / "population_train.csv"

    def binary_csv(self, split: str) -> Path:
        return self.directory / "data" / "binary" / f"{split}.csv"

    @property
    def base_run(self) -> Path:
        """N&Z's base DDIM on the population (the fine-tune's starting point)."""
        return self.directory / "generators" / "base"

    def generator_run(self, name: str) -> Path:
        return self.directory / "generators" / name

    def synthetic_root(self, name: str) -> Path:
        """The ``--synthetic`` folder of a generator (one sub-folder, the positive label)."""
        return self.directory / "synthetic" / name

    def synthetic_dir(self, name: str) -> Path:
        return self.synthetic_root(name) / self.positive_label

    @property
    def classifier_dir(self) -> Path:
        return self.directory / "classifier"

    def experiment_dir(self, name: str) -> Path:
        """A classifier experiment: ``real`` (the real-only arms) or a generator's synthetic arms."""
        return self.classifier_dir / name

    @property
    def evaluation_dir(self) -> Path:
        return self.directory / "evaluation"

    def attribute_classifier_dir(self, attribute: str) -> Path:
        return self.evaluation_dir / "attribute_classifier" / attribute

    def kit_dir(self, name: str) -> Path:
        return self.directory / "expert_kit" / name

    # The selection ----------------------------------------------------------------------------
    @property
    def generators(self) -> list[str]:
        return list(self.config.attribute_generators)

    def _items(self, option: str) -> list[tuple[str, str]]:
        from cellgen.data.attributes import split_item

        return [split_item(item, option, ConfigError) for item in getattr(self.config, option)]

    @property
    def requested(self) -> list[tuple[str, str]]:
        """The positive selection's attribute items ``(column, value)`` (without ``class``)."""
        return [(column, value) for column, value in self._items("positive") if column != "class"]

    @property
    def attributes(self) -> list[str]:
        return [column for column, _ in self.requested]

    @property
    def attribute_items(self) -> list[str]:
        """``COLUMN=VALUE`` of each requested attribute (``generate.py --attr``)."""
        return [f"{column}={value}" for column, value in self.requested]

    @property
    def positive_label(self) -> str:
        return self.config.positive_label or self.requested[-1][1]

    @property
    def class_name(self) -> str:
        """The one class of the positive cells (the conditional generator draws it)."""
        for option in ("positive", "population"):
            names = [value for column, value in self._items(option) if column == "class"]
            if len(names) > 1:
                raise ConfigError(f"{option}: the positives must be of one class, got {', '.join(names)}")
            if names:
                return names[0]
        raise ConfigError("positive: name the positives' class (class=NAME) in positive or population")

    @property
    def real_arms(self) -> list[str]:
        return [arm for arm in self.config.arms if arm not in SYNTHETIC_ARMS]

    @property
    def synthetic_arms(self) -> list[str]:
        return [arm for arm in self.config.arms if arm in SYNTHETIC_ARMS]

    def experiments(self) -> list[str]:
        """The classifier experiments: ``real`` (when a real-only arm is asked for), then one per generator
        (when a synthetic arm is)."""
        names = [REAL_EXPERIMENT] if self.real_arms else []
        return names + (self.generators if self.synthetic_arms else [])

    def generator_runs(self) -> list[tuple[str, Path]]:
        """(title, run directory) of every generator run, in training order."""
        runs = []
        if "conditional" in self.generators:
            runs.append((GENERATOR_TITLES["conditional"], self.generator_run("conditional")))
        if "finetuned" in self.generators:
            runs += [("base DDIM on the population", self.base_run),
                     (GENERATOR_TITLES["finetuned"], self.generator_run("finetuned"))]
        return runs

    def owned_outputs(self) -> dict[str, list[Path]]:
        return {
            "prepare": [self.directory / "data"],
            "base": [self.generator_run("conditional"), self.base_run],
            "finetune": [self.generator_run("finetuned")],
            "generate": [self.directory / "synthetic"],
            "filter": [],
            "evaluate": [self.evaluation_dir, self.directory / "expert_kit"],
            "classify": [self.classifier_dir],
            "report": [],
        }

    # Validation -------------------------------------------------------------------------------
    def check(self) -> list[str]:
        """Checks the data, the table, the selections and every stage's config before anything trains;
        returns the training classes."""
        from cellgen.data import DataError, DataReader
        from cellgen.data.attributes import parse_selection, read_table

        config = resolve_sample_paths(self.config)
        self.config = config = config.replace(attributes_csv=resolve_sample_table(config.attributes_csv))
        require_paths(config, ("train", "val", "test", "attributes_csv"))
        try:
            classes = DataReader(config.train, image_size=config.image_size, batch_size=1).classes
            table = read_table(config.attributes_csv)
            parse_selection(list(config.population), table, classes, option="population")
            parse_selection(list(config.positive), table, classes, option="positive")
        except DataError as error:
            raise ConfigError(f"study: {error}") from None
        if self.class_name not in classes:
            raise ConfigError(f"study: class {self.class_name!r} is not in {config.train} (classes: {', '.join(classes)})")
        if self.positive_label == config.negative_label:
            raise ConfigError(f"study: the positive and negative labels are both {config.negative_label!r}; "
                              "set positive_label")
        for name in config.ignored_settings():
            print(f"warning: study: {name} is set but an attribute study does not use it", file=sys.stderr)
        generator_config = stages.generator_config_class("ddim")
        if "conditional" in self.generators:
            config_from_request(generator_config, self.conditional_request())
        if "finetuned" in self.generators:
            config_from_request(generator_config, self.base_request())
            config_from_request(generator_config, self.finetune_request())
        from cellgen.classify.config import ClassifierConfig

        for name in self.experiments():
            config_from_request(ClassifierConfig, self.binary_request(name))
        load_config(ClassifierConfig, config.attribute_classifier_preset, self._attribute_classifier_overrides())
        return classes

    # Requests ---------------------------------------------------------------------------------
    def _generator_request(self, preset: str, overrides, out: Path, finetune_from: Path | None = None,
                           **fields: Any) -> RunRequest:
        """A DDIM training request on the population's training images (resumed when ``out`` holds one)."""
        config = self.config
        values = {**parse_set_options(overrides), "data": str(self.population_csv),
                  "image_size": config.generator_size, "seed": config.seed, "strategy": config.strategy,
                  **self._precision_overrides(), **fields}
        return RunRequest(preset=str(resolve_preset_path(preset)), overrides=values, out=str(out),
                          resume=(out / "config.json").is_file(),
                          finetune_from=str(finetune_from) if finetune_from is not None else None)

    def conditional_request(self) -> RunRequest:
        """The DDIM conditioned on class and the selection's attributes, on the whole population."""
        return self._generator_request(self.config.generator_preset, self.config.generator_overrides,
                                       self.generator_run("conditional"), conditional=True,
                                       attributes=self.attributes, attributes_csv=self.config.attributes_csv)

    def base_request(self) -> RunRequest:
        """N&Z's base: the same preset and budget as the conditional DDIM, unconditional."""
        return self._generator_request(self.config.generator_preset, self.config.generator_overrides,
                                       self.base_run, conditional=False)

    def finetune_request(self) -> RunRequest:
        """N&Z's fine-tune of the base on the positive training images (``--select``)."""
        config = self.config
        return self._generator_request(config.finetune_preset or config.generator_preset, config.finetune_overrides,
                                       self.generator_run("finetuned"), finetune_from=self.base_run,
                                       attributes_csv=config.attributes_csv, select=list(config.positive))

    def _attribute_classifier_overrides(self) -> dict[str, Any]:
        return {"image_size": self.config.image_size, **self._precision_overrides(),
                **parse_set_options(self.config.attribute_classifier_overrides)}

    def binary_request(self, name: str) -> RunRequest:
        """The binary classifier experiment ``name`` (``real``: the real-only arms; a generator: the
        synthetic arms with its images), on the binary lists, with the study's seeds."""
        config = self.config
        values: dict[str, Any] = {**parse_set_options(config.classifier_overrides), "data": str(self.binary_csv("train")),
                                  "val_data": str(self.binary_csv("val")), "test_data": str(self.binary_csv("test")),
                                  "image_size": config.image_size, "seed": config.seed, "strategy": config.strategy,
                                  **self._precision_overrides(), "mode": "binary", "positive": self.positive_label,
                                  "oversample_val_positive": True, "seeds": config.seeds}
        if name == REAL_EXPERIMENT:
            values.update(arms=self.real_arms, synthetic="", synthetic_from="")
        else:
            values.update(arms=self.synthetic_arms, synthetic=str(self.synthetic_root(name)), synthetic_from="",
                          synthetic_classes=[self.positive_label])
            if config.synthetic_count:
                values.update(synthetic_count=config.synthetic_count, synthetic_match_positive=False)
            else:
                values.update(synthetic_count=0, synthetic_match_positive=True)
        out = self.experiment_dir(name)
        return RunRequest(preset=str(resolve_preset_path(config.classifier_preset)), overrides=values, out=str(out),
                          resume=(out / "config.json").is_file())

    # Stages -----------------------------------------------------------------------------------
    def stage_prepare(self) -> dict[str, Any]:
        from cellgen.data import DataReader
        from cellgen.evaluate.attributes import write_binary_file_list

        config = self.config
        population = DataReader(config.train, image_size=config.image_size, batch_size=1, shuffle=False,
                                seed=config.seed, on_error=config.on_error, attributes=config.attributes_csv,
                                select=list(config.population))
        population.write_file_list(self.population_csv)
        if population.skipped:
            population.write_skip_report(self.directory / "data")
        self.commands.note(f"prepare: {population.num_images} training images of {population.selection} "
                           f"-> {self.population_csv}; binary lists ({self.positive_label}: "
                           f"{' '.join(config.positive)}) -> {self.binary_csv('train').parent}")
        binary = {}
        for split, source in (("train", str(self.population_csv)), ("val", config.val), ("test", config.test)):
            binary[split] = write_binary_file_list(source, self.binary_csv(split), config.attributes_csv,
                                                   select=list(config.population), positive=list(config.positive),
                                                   positive_label=self.positive_label,
                                                   negative_label=config.negative_label)
        counts = {"population": population.class_counts(), "binary": binary,
                  "positive_train": binary["train"][self.positive_label]}
        write_json(self.directory / "data" / "counts.json", counts)
        return {"population_csv": str(self.population_csv), **counts}

    def stage_base(self) -> dict[str, Any]:
        outputs = {}
        if "conditional" in self.generators:
            if not RunDir(self.generator_run("conditional")).is_complete:
                stages.train_generator("ddim", self.conditional_request(), log=self.commands)
            outputs["conditional"] = str(self.generator_run("conditional"))
        if "finetuned" in self.generators:
            if not RunDir(self.base_run).is_complete:
                stages.train_generator("ddim", self.base_request(), log=self.commands)
            outputs["base"] = str(self.base_run)
        return outputs

    def stage_finetune(self) -> dict[str, Any]:
        if "finetuned" not in self.generators:
            return {"skipped": "no fine-tuned generator (attribute_generators)"}
        run = self.generator_run("finetuned")
        if not RunDir(run).is_complete:
            stages.train_generator("ddim", self.finetune_request(), log=self.commands)
        return {"finetuned": str(run), "base": str(self.base_run), "select": list(self.config.positive)}

    def synthetic_count(self) -> int:
        """Positives each generator draws: ``synthetic_count``, or the real positive training count (N&Z)."""
        return self.config.synthetic_count or int(read_json(self.directory / "data" / "counts.json")["positive_train"])

    def generation_request(self, name: str, index: int) -> stages.GenerationRequest:
        config = self.config
        conditional = name == "conditional"
        return stages.GenerationRequest(
            run=str(self.generator_run(name)), out=str(self.synthetic_dir(name)), count=self.synthetic_count(),
            seed=config.seed + 1000 * (index + 1), steps=config.sample_steps,
            class_name=self.class_name if conditional else None, guidance=config.guidance if conditional else None,
            sampler=(config.sampler or None) if conditional else None,
            attributes=self.attribute_items if conditional else [])

    def stage_generate(self) -> dict[str, Any]:
        for index, name in enumerate(self.generators):
            request = self.generation_request(name, index)
            if Path(request.out).exists():
                shutil.rmtree(request.out)  # a half-written folder from an interrupted run
            stages.generate_images(request, log=self.commands)
        return {"count": self.synthetic_count(), "folders": {name: str(self.synthetic_dir(name))
                                                             for name in self.generators}}

    def stage_filter(self) -> dict[str, Any]:
        return {"filtered": False, "note": "an attribute study has no synthetic filter"}

    def attribute_classifier_request(self, attribute: str) -> stages.AttributeClassifierRequest:
        """The attribute classifier: the population's real training images only."""
        config = self.config
        return stages.AttributeClassifierRequest(
            data=str(self.population_csv), attribute=attribute, attributes_csv=config.attributes_csv,
            select=list(config.population), out=str(self.attribute_classifier_dir(attribute)),
            preset=config.attribute_classifier_preset, overrides=self._attribute_classifier_overrides(),
            seed=config.seed)

    def stage_evaluate(self) -> dict[str, Any]:
        from cellgen.evaluate.attributes import attribute_fidelity, evaluate_real, fidelity_markdown
        from cellgen.evaluate.tasks import ExpertKitOptions

        config = self.config
        fidelity: dict[str, Any] = {}
        tables = []
        for column, value in self.requested:
            classifier = stages.train_attribute_classifier(self.attribute_classifier_request(column), log=self.commands)
            real = evaluate_real(classifier, config.val, config.attributes_csv, select=list(config.population))
            generated = {name: attribute_fidelity(classifier, str(self.synthetic_dir(name)), value)
                         for name in self.generators}
            real_requested = real["per_value"].get(value)
            fidelity[column] = {
                "requested": value, "classifier": str(self.attribute_classifier_dir(column)),
                "classifier_values": classifier.values, "training_counts": classifier.training_counts,
                "real_val": {"images": real["images"], "accuracy": real["accuracy"],
                             "balanced_accuracy": real["balanced_accuracy"],
                             "requested_images": real_requested["support"] if real_requested else 0,
                             "called_requested": real_requested["called"] if real_requested else None,
                             "per_value": real["per_value"]},
                "generators": {name: {"images": result["images"], "called_requested": result["called_requested"],
                                      "called": result["called"]} for name, result in generated.items()}}
            tables.append(fidelity_markdown({GENERATOR_TITLES[name]: result for name, result in generated.items()},
                                            real))
        write_json(self.evaluation_dir / "fidelity.json", fidelity)
        (self.evaluation_dir / "fidelity.md").write_text("\n".join(tables), encoding="utf-8")
        outputs: dict[str, Any] = {"fidelity": str(self.evaluation_dir / "fidelity.json")}
        if config.expert_kit_size:
            counts = read_json(self.directory / "data" / "counts.json")["binary"]
            real_positives = counts["val"][self.positive_label]
            for index, name in enumerate(self.generators):
                # Half real, half synthetic: the kit cannot hold more real positives than validation has.
                size = min(config.expert_kit_size, 2 * real_positives, 2 * self.synthetic_count())
                if size < 2:
                    outputs.setdefault("expert_kits_skipped", {})[name] = "fewer than 2 images"
                    continue
                stages.make_expert_kit(ExpertKitOptions(
                    real=str(self.binary_csv("val")), synthetic=str(self.synthetic_root(name)),
                    out=str(self.kit_dir(name)), n=size, seed=config.seed + index, class_name=self.positive_label,
                    overwrite=True), log=self.commands)
                outputs.setdefault("expert_kits", {})[name] = str(self.kit_dir(name))
        return outputs

    def stage_classify(self) -> dict[str, Any]:
        reports = {}
        for name in self.experiments():
            stages.run_classifier_experiment(self.binary_request(name), log=self.commands)
            report = self.experiment_dir(name) / "report.json"
            if not report.is_file():
                raise StudyError(f"stage 'classify': {report} was not written")
            reports[name] = str(report)
        comparison = classifier_comparison(self)
        write_json(self.classifier_dir / "comparison.json", comparison)
        return {"reports": reports, "comparison": str(self.classifier_dir / "comparison.json")}

    def stage_report(self) -> dict[str, Any]:
        return {key: str(value) for key, value in write_attribute_report(self).items()}
