"""Configuration of an augmentation study (``run_study.py``).

A study answers one question: does adding synthetic images of a rare class
to the training set improve the classifier? It names the data, the generator
and its presets, the classes to synthesise, how many images, the classifier
and its arms, the seeds, and the scarcity setting.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from cellgen.config import CommonConfig, ConfigError

GENERATOR_KINDS = ("ddim", "vanilla_gan")
# The stages of a study, in order (cellgen.study.pipeline runs them).
STAGES = ("prepare", "base", "finetune", "generate", "evaluate", "classify", "report")


@dataclasses.dataclass
class StudyConfig(CommonConfig):
    """Settings of an augmentation study.

    Attributes:
        train, val, test: class folders (or CSVs for ``train``) with the same classes.
            ``test`` may be left empty in the preset and given with ``--test``.
        generator: ``ddim`` or ``vanilla_gan`` (one base model, fine-tuned per target class:
            N&Z 2023 fine-tuned a DDIM, and a GAN with FreezeD, per abnormality).
        generator_preset: preset of the base generator (a file or a name in ``configs/``).
        generator_overrides: ``key=value`` overrides of the base preset.
        base_run: reuse this trained base generator run instead of training one.
        finetune_preset: preset for the per-class fine-tuning (empty: the base preset).
        finetune_overrides: ``key=value`` overrides of the fine-tuning preset.
        target_classes: the classes to fine-tune on and synthesise.
        synthetic_count: synthetic images per target class; 0 fills the class back up to its
            original (uncapped) real count, as N&Z matched the real abnormal count.
        limit_class: scarcity setting, class -> fraction (<= 1) or count of real training
            images kept; the kept subset is fixed by ``seed`` and used by EVERY stage.
        classifier_preset, classifier_overrides: the classifier (``evaluate_classifier.py``).
        arms: classifier arms, e.g. ``baseline``, ``synthetic``, ``classical``.
        seeds: classifier repetitions per arm.
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
    """

    kind: ClassVar[str] = "study"
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
    base_run: str = ""
    finetune_preset: str = ""
    finetune_overrides: list[str] = dataclasses.field(default_factory=list)
    target_classes: list[str] = dataclasses.field(default_factory=list)
    synthetic_count: int = 0
    limit_class: dict[str, float] = dataclasses.field(default_factory=dict)
    classifier_preset: str = "classifier_fast"
    classifier_overrides: list[str] = dataclasses.field(default_factory=list)
    arms: list[str] = dataclasses.field(default_factory=lambda: ["baseline", "synthetic"])
    seeds: int = 1
    extractor: str = "domain"
    evaluation_count: int = 0
    evaluation_seeds: int = 1
    expert_kit_size: int = 20
    sample_steps: int = 20

    def validate(self) -> None:
        super().validate()
        if self.generator not in GENERATOR_KINDS:
            raise ConfigError(f"generator must be one of {', '.join(GENERATOR_KINDS)}; got {self.generator!r}")
        if self.seeds < 1:
            raise ConfigError(f"seeds must be >= 1, got {self.seeds}")
        if self.synthetic_count < 0:
            raise ConfigError(f"synthetic_count must be >= 0, got {self.synthetic_count}")
        for name, amount in self.limit_class.items():
            if not isinstance(amount, (int, float)) or amount <= 0:
                raise ConfigError(f"limit_class.{name} must be a positive fraction or count, got {amount!r}")
        for overrides_name in ("generator_overrides", "finetune_overrides", "classifier_overrides"):
            for item in getattr(self, overrides_name):
                if "=" not in item:
                    raise ConfigError(f"{overrides_name}: expected key=value, got {item!r}")
