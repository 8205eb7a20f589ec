"""Configuration of an augmentation study (``run_study.py``).

A study answers one question: does adding synthetic images of a rare class
to the training set improve the classifier, beyond what the cheap fixes
(flips, rotations) already win back? It names the data, the generator and its
presets, the classes to synthesise, how many images, the optional filter, the
classifier and its arms, the seeds, and the scarcity setting with its reference.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from cellgen.config import CommonConfig, ConfigError, Range, at_least, between, every, one_of

# ddim_cond: one class-conditional DDIM (classifier-free guidance) of every class, sampled per class;
# ddim / vanilla_gan: a base model fine-tuned per synthesised class (N&Z 2023);
# acgan: a Vanilla-GAN base, then one AC-GAN on its frozen networks, sampled per class (K&C 2020).
GENERATOR_KINDS = ("ddim", "ddim_cond", "vanilla_gan", "acgan")
# Generators fine-tuned once per synthesised class in the finetune stage.
PER_CLASS_FINETUNED = ("ddim", "vanilla_gan")
# The stages of a study, in order (cellgen.study.pipeline runs them).
STAGES = ("prepare", "base", "finetune", "generate", "filter", "evaluate", "classify", "report")
SYNTHETIC_CLASS_CHOICES = ("target", "all")
ARMS = ("baseline", "classical", "synthetic", "classical+synthetic")
# The generators of an attribute study (``positive`` set; cellgen.study.attribute_study), side by side:
# conditional: one DDIM conditioned on class and the selection's attributes, trained once on the
# population's training images and sampled with ``--attr``; finetuned: N&Z 2023's route, a base DDIM on
# the population fine-tuned on the positives (``--finetune-from BASE --select ...``).
ATTRIBUTE_GENERATORS = ("conditional", "finetuned")
# Study fields an attribute study does not read (it warns when one is set).
ATTRIBUTE_IGNORED = ("target_classes", "limit_class", "synthetic_classes", "filter_threshold", "base_run",
                     "acgan_overrides", "extractor", "finetune_conditional")


@dataclasses.dataclass
class StudyConfig(CommonConfig):
    """Settings of an augmentation study.

    Attributes:
        train, val, test: class folders (or CSVs for ``train``) with the same classes.
            ``test`` may be left empty in the preset and given with ``--test``.
        generator: ``ddim_cond`` (one class-conditional DDIM trained once on the kept training
            images of every class and sampled per class with classifier-free guidance; fine-tuned
            per synthesised class only with ``finetune_conditional``), or ``ddim`` /
            ``vanilla_gan`` (one base model, fine-tuned per synthesised class: N&Z 2023 fine-tuned
            a DDIM, and a GAN with FreezeD, per abnormality),
            or ``acgan`` (K&C 2020: a Vanilla-GAN base trained on the kept images, then in the
            ``finetune`` stage one AC-GAN on its frozen networks, trained on the same kept images
            with their labels and sampled per class; pair it with ``classifier_preset =
            "kc2020_xception"`` for K&C's route).
        generator_preset: preset of the base generator (a file or a name in ``configs/``);
            ``ddim_cond`` forces ``conditional = true`` on it; for ``acgan`` the Vanilla-GAN base's.
            A GAN preset's ``augment`` (DiffAugment) applies as in ``train_vanilla_gan.py``.
        generator_image_size: the generators' image size (0: ``image_size``). A smaller generator
            is much cheaper to train; its images are enlarged to ``image_size`` for the classifier.
        match_synthetic_resolution: with a generator smaller than ``image_size``, the arms with
            synthetic images also shrink and re-enlarge every training image to the generator's
            size with probability 0.5 (the classifier's ``match_synthetic_size``), so that blur
            stops being a sign of the synthesised class. Arms without synthetic images and the
            reference are untouched.
        guidance, sampler: classifier-free guidance weight and solver of a ``ddim_cond`` generator
            (``sampler`` empty: the run's own).
        generator_overrides: ``key=value`` overrides of the base preset.
        base_run: reuse this trained base generator run instead of training one.
        finetune_conditional: with ``ddim_cond``, fine-tune the conditional base on the kept images
            of each synthesised class (N&Z 2023's per-abnormality fine-tune, started from a model that
            learnt every class) and sample each fine-tune for its class with the same guidance. On
            PBC with 85 kept basophils, the base alone drew basophils a real-image classifier called
            basophil 5 % of the time; a 60-epoch fine-tune 72.5 % (docs/benchmarks.md).
        finetune_preset: preset for the per-class fine-tuning (empty: the base preset).
        finetune_overrides: ``key=value`` overrides of the fine-tuning preset.
            ``finetune_preset`` and ``finetune_overrides`` apply to ``ddim`` and ``vanilla_gan``, and
            to ``ddim_cond`` with ``finetune_conditional``.
        acgan_preset: with ``generator = "acgan"``, the AC-GAN's preset (``acgan_fast``, or
            ``kc2020_acgan`` for K&C's Table 3); its image and latent sizes are the base run's.
        acgan_overrides: ``key=value`` overrides of the AC-GAN preset (``generator = "acgan"`` only).
        target_classes: the classes the study is about: synthesised, and reported on.
        synthetic_count: synthetic images per target class; 0 fills the class back up to its
            original (uncapped) real count, as N&Z matched the real abnormal count.
        synthetic_classes: ``target`` (only the target classes get synthetic images) or ``all``
            (every class gets as many as the target class, so the classifier cannot learn
            "synthetic means rare class": N&Z 2023 section 6).
        filter_threshold: keep a generated image only when a classifier trained on the kept
            real training images (classical arm; it never sees validation, test or removed
            images) gives its class at least this probability; 0 = no filter.
        filter_candidates: with the filter, images generated per image needed (>= 1).
        limit_class: scarcity setting, class -> fraction (<= 1) or count of real training
            images kept; the kept subset is fixed by ``seed`` and used by EVERY stage.
        classifier_preset, classifier_overrides: the classifier (``evaluate_classifier.py``);
            ``classifier_study`` is MobileNetV2 alpha 0.75 at 64 px from random weights.
        arms: classifier arms: ``baseline``, ``classical`` (dihedral flips and turns, zoom),
            ``synthetic``, ``classical+synthetic``. Arms share every seed, so their differences
            are paired per seed (95 % t intervals in the report).
        seeds: classifier repetitions per arm (at least 3 for an interval worth reading).
        reference: with ``limit_class``, also train the ``classical`` arm on the uncapped training
            set (a reference only: no generator, filter or other arm sees the removed images),
            so the report measures the share of the scarcity loss the synthetic images win back.
        sweep_caps: off when empty. Caps (fractions or counts) of the scarce class: the whole
            study runs once per cap (``DIR/caps/cap-CAP/``) and ``DIR/sweep_f1.png`` plots its F1
            against the real images kept, one line per arm (:mod:`cellgen.study.sweep`).
        extractor: feature extractor for FID/KID: ``domain`` (a classifier trained on the
            kept real training images in the study, the default: ImageNet features weigh
            cell detail poorly), ``inception`` (needs ImageNet weights) or a ``.keras`` path;
            ``none`` skips the metrics (the memorisation check and expert kit still run).
        evaluation_count: images per set for the generator metrics (0 = all available).
        evaluation_seeds: repetitions of the generator metrics.
        expert_kit_size: images in the blinded real-vs-synthetic kit per class (0 = none).
        sample_steps: diffusion sampling steps (DDIM) for generation.
        precision: ``preset`` (default: every stage uses its preset's precision) or one
            precision forced on every stage.

    Attribute study (``positive`` set; :mod:`cellgen.study.attribute_study`): the N&Z abnormality
    experiment with a WBCAtt attribute selection as the "abnormality".

    Attributes:
        attributes_csv: the attribute table of the ``train``/``val``/``test`` images (WBCAtt's
            layout, ``split,class,file,<attributes>``; rows matched by class and file name).
        positive: the positive cells, ``COLUMN=VALUE`` items, e.g. ``["class=neutrophil",
            "nucleus_shape=segmented-multilobed"]``; one class and one value per attribute column
            (the conditional generator draws exactly that). Non-empty turns the attribute study on.
        population: the cells the experiment is about, e.g. ``["class=neutrophil"]``; the negatives
            are the population's other cells. Every generator, filter and classifier reads only the
            population's training images.
        positive_label, negative_label: the labels of the binary experiment (``positive_label``
            empty: the positive selection's last attribute value).
        attribute_generators: ``conditional`` and/or ``finetuned`` (see ``ATTRIBUTE_GENERATORS``);
            ``generator_preset``/``generator_overrides`` train the conditional DDIM (forced
            conditional, on the selection's attributes) and the N&Z base (forced unconditional) alike,
            ``finetune_preset``/``finetune_overrides`` the fine-tune on the positives.
        attribute_classifier_preset, attribute_classifier_overrides: the attribute classifier of the
            fidelity stage (trained on the population's real training images only).
        With ``synthetic_count = 0`` each generator draws as many positives as there are real
        positive training images (N&Z Table 4). ``target_classes``, ``limit_class``,
        ``synthetic_classes``, the filter, ``sweep_caps``, ``base_run`` and the FID ``extractor``
        are not used.
    """

    kind: ClassVar[str] = "study"
    ranges: ClassVar[dict[str, Range]] = {
        "generator": one_of(*GENERATOR_KINDS), "seeds": at_least(1), "synthetic_count": at_least(0),
        "generator_image_size": at_least(0, note="0 = image_size"), "guidance": at_least(0),
        "synthetic_classes": one_of(*SYNTHETIC_CLASS_CHOICES),
        "filter_threshold": between(0, 1, high_open=True, note="0 = no filter"), "filter_candidates": at_least(1),
        "attribute_generators": every(one_of(*ATTRIBUTE_GENERATORS)),
    }
    # "preset": each stage keeps its own preset's precision (bf16 suits the DDIM on AMX CPUs,
    # while MobileNetV2's depthwise convolutions are slower in bf16 on CPUs).
    precisions: ClassVar[tuple[str, ...]] = ("preset", "fp32", "bf16", "fp16", "auto")
    precision: str = "preset"

    train: str = ""
    val: str = ""
    test: str = ""
    generator: str = "ddim"
    generator_preset: str = "ddim_fast"
    generator_overrides: list[str] = dataclasses.field(default_factory=list)
    generator_image_size: int = 0
    match_synthetic_resolution: bool = False
    guidance: float = 2.0
    sampler: str = ""
    base_run: str = ""
    finetune_conditional: bool = False
    finetune_preset: str = ""
    finetune_overrides: list[str] = dataclasses.field(default_factory=list)
    acgan_preset: str = "acgan_fast"
    acgan_overrides: list[str] = dataclasses.field(default_factory=list)
    target_classes: list[str] = dataclasses.field(default_factory=list)
    synthetic_count: int = 0
    synthetic_classes: str = "target"
    filter_threshold: float = 0.0
    filter_candidates: float = 2.0
    limit_class: dict[str, float] = dataclasses.field(default_factory=dict)
    classifier_preset: str = "classifier_study"
    classifier_overrides: list[str] = dataclasses.field(default_factory=list)
    arms: list[str] = dataclasses.field(default_factory=lambda: list(ARMS))
    seeds: int = 3
    reference: bool = True
    sweep_caps: list[float] = dataclasses.field(default_factory=list)
    extractor: str = "domain"
    evaluation_count: int = 0
    evaluation_seeds: int = 1
    expert_kit_size: int = 20
    sample_steps: int = 20
    # attribute study
    attributes_csv: str = ""
    positive: list[str] = dataclasses.field(default_factory=list)
    population: list[str] = dataclasses.field(default_factory=list)
    positive_label: str = ""
    negative_label: str = "other"
    attribute_generators: list[str] = dataclasses.field(default_factory=lambda: list(ATTRIBUTE_GENERATORS))
    attribute_classifier_preset: str = "classifier_fast"
    attribute_classifier_overrides: list[str] = dataclasses.field(default_factory=list)

    @property
    def attribute_study(self) -> bool:
        """Positives are an attribute selection within a population (cellgen.study.attribute_study)."""
        return bool(self.positive)

    @property
    def conditional(self) -> bool:
        """A class-conditional DDIM base, sampled per class with guidance (itself, or its fine-tunes)."""
        return self.generator == "ddim_cond"

    @property
    def acgan(self) -> bool:
        """One AC-GAN on the frozen base Vanilla-GAN, sampled per class (K&C 2020)."""
        return self.generator == "acgan"

    @property
    def per_class_finetune(self) -> bool:
        """The base generator is fine-tuned once per synthesised class (N&Z 2023)."""
        return self.generator in PER_CLASS_FINETUNED or (self.conditional and self.finetune_conditional)

    @property
    def trainer_kind(self) -> str:
        """The base generator's run kind (``ddim_cond`` trains a ``ddim`` run, ``acgan`` a ``vanilla_gan``)."""
        return {"ddim_cond": "ddim", "acgan": "vanilla_gan"}.get(self.generator, self.generator)

    @property
    def generator_size(self) -> int:
        return self.generator_image_size or self.image_size

    @property
    def filtering(self) -> bool:
        return self.filter_threshold > 0

    def validate(self) -> None:
        super().validate()
        unknown_arms = [arm for arm in self.arms if arm not in ARMS]
        if unknown_arms:
            raise ConfigError(f"study: unknown arm(s) {', '.join(unknown_arms)} (arms: {', '.join(ARMS)})")
        if not self.arms:
            raise ConfigError("arms: give at least one arm")
        for name, amount in self.limit_class.items():
            if not isinstance(amount, (int, float)) or amount <= 0:
                raise ConfigError(f"limit_class.{name} must be a positive fraction or count, got {amount!r}")
        if self.sweep_caps:
            if len(self.limit_class) > 1 or (not self.limit_class and len(self.target_classes) != 1):
                raise ConfigError("sweep_caps: caps one class; give one limit_class entry or one target class")
            bad = [cap for cap in self.sweep_caps if not isinstance(cap, (int, float)) or cap <= 0]
            if bad:
                raise ConfigError(f"sweep_caps entries must be positive fractions or counts, got {bad}")
        if self.attribute_study:
            self._validate_attribute_study()
        for overrides_name in ("generator_overrides", "finetune_overrides", "acgan_overrides",
                               "classifier_overrides", "attribute_classifier_overrides"):
            for item in getattr(self, overrides_name):
                if "=" not in item:
                    raise ConfigError(f"{overrides_name}: expected key=value, got {item!r}")

    def _validate_attribute_study(self) -> None:
        """The checks of an attribute study that need no table (values are checked against it later)."""
        from cellgen.data.attributes import CLASS_COLUMN, SPLIT_COLUMN, split_item

        if not self.attributes_csv:
            raise ConfigError("positive: an attribute study needs attributes_csv (WBCAtt's layout)")
        if not self.population:
            raise ConfigError("positive: give the population too (e.g. population = [\"class=neutrophil\"]); "
                              "its other cells are the negatives")
        if self.generator not in ("ddim", "ddim_cond"):
            raise ConfigError(f"positive: an attribute study's generators are DDIMs, not {self.generator!r}")
        if self.sweep_caps:
            raise ConfigError("sweep_caps: the attribute study has no scarcity sweep (leave sweep_caps empty)")
        if not self.attribute_generators:
            raise ConfigError(f"attribute_generators: give at least one of {', '.join(ATTRIBUTE_GENERATORS)}")
        if len(set(self.attribute_generators)) != len(self.attribute_generators):
            raise ConfigError(f"attribute_generators: a generator is listed twice in {self.attribute_generators}")
        for option in ("positive", "population"):
            for item in getattr(self, option):
                column, _ = split_item(item, option, ConfigError)
                if column == SPLIT_COLUMN:
                    raise ConfigError(f"{option}: {item!r}: the study chooses the splits itself (train, val, test)")
        columns: dict[str, list[str]] = {}
        for item in self.positive:
            column, value = split_item(item, "positive", ConfigError)
            columns.setdefault(column, []).append(value)
        several = {column: values for column, values in columns.items() if len(values) > 1}
        if several:
            column, values = next(iter(several.items()))
            raise ConfigError(f"positive: {column} has alternatives {values}; the conditional generator draws one "
                              "value per attribute (give one)")
        if not [column for column in columns if column != CLASS_COLUMN]:
            raise ConfigError("positive: name at least one attribute value, e.g. nucleus_shape=segmented-multilobed")
        if self.positive_label and self.positive_label == self.negative_label:
            raise ConfigError(f"positive_label and negative_label must differ, both are {self.negative_label!r}")
        if not self.negative_label:
            raise ConfigError("negative_label: give the negatives' label (default: other)")

    def ignored_settings(self) -> list[str]:
        """The set fields that the chosen generator does not use (the study warns about them)."""
        if self.attribute_study:
            defaults = type(self)()
            return [name for name in ATTRIBUTE_IGNORED if getattr(self, name) != getattr(defaults, name)]
        ignored = []
        if not self.per_class_finetune:
            ignored += [name for name in ("finetune_preset", "finetune_overrides") if getattr(self, name)]
        if not self.acgan and self.acgan_overrides:
            ignored.append("acgan_overrides")
        if not self.conditional and self.finetune_conditional:
            ignored.append("finetune_conditional")
        return ignored
