"""Configuration of the classifier augmentation benchmark (issue 5).

One :class:`ClassifierConfig` describes a whole experiment: the backbone and its
training hyperparameters, the data splits, the arms (baseline, classical,
synthetic, classical+synthetic), the amount of synthetic data and the seeds.
Presets: ``configs/nz2023_mobilenetv2.toml`` (Nilsson & Zettergren 2023,
section 4.4 and Table 4), ``configs/kc2020_xception.toml`` (Klang & Carlberg
2020, sections 4.7 and 5.4) and ``configs/classifier_fast.toml`` (CPU demo).

Example:
    >>> from cellgen.config import load_config
    >>> config = load_config(ClassifierConfig, "classifier_fast", ["arms=baseline,synthetic", "seeds=2"])
    >>> config.arms, config.seeds
    (['baseline', 'synthetic'], 2)
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from cellgen.config import CommonConfig, ConfigError, Range, above, at_least, between, one_of

ARMS = ("baseline", "classical", "synthetic", "classical+synthetic")
SYNTHETIC_ARMS = ("synthetic", "classical+synthetic")
CLASSICAL_ARMS = ("classical", "classical+synthetic")
MODES = ("multiclass", "binary")
CLASS_WEIGHTS = ("none", "balanced")
SAMPLINGS = ("shuffle", "balanced")


@dataclasses.dataclass
class ClassifierConfig(CommonConfig):
    """Hyperparameters and options of one classifier experiment.

    Attributes:
        data: training split (class folders or CSV); ``--train`` on the command line.
        val_data: validation split, used to pick the epoch with the lowest validation loss.
        test_data: test split, used only for the reported metrics.
        backbone: ``mobilenetv2``, ``xception`` or ``smallcnn`` (a small CNN for CPU demos).
        alpha: MobileNetV2 width multiplier (N&Z: 0.75).
        weights: ``none`` (random initialisation, the default: nothing is downloaded unless asked),
            ``imagenet`` (Keras' download or its cache ``~/.keras/models``; the thesis presets
            ``kc2020_xception`` and ``nz2023_mobilenetv2`` ask for it) or the path of a backbone
            weights file.
        bn_momentum: momentum of every batch-norm layer of the backbone. Keras'
            applications use 0.99-0.999, which with a few hundred steps leaves the moving
            statistics far from the data and inference-mode predictions collapse.
        freeze_backbone: train only the head (frozen batch norms run in inference mode).
        dropout: dropout before the softmax layer (0 = none, as in N&Z).
        cnn_width, cnn_blocks: filters of the first block and number of blocks of ``smallcnn``.
        learning_rate: Adam learning rate.
        early_stopping_patience: epochs without a lower validation loss before stopping (0 = off).
        class_weights: ``none`` or ``balanced`` (weights n / (k * n_c) over the training set of an arm).
        sampling: ``shuffle`` (every training image once per epoch) or ``balanced`` (every class
            repeated to the largest class's count each epoch, the repeats augmented anew in the
            classical arms; the epoch grows accordingly, ``steps_per_epoch`` can cap it).
        steps_per_epoch: 0 = one pass over the arm's training set; N > 0 gives every arm the same
            number of optimizer steps (equal compute instead of equal epochs).
        mode: ``multiclass`` (K&C) or ``binary`` (N&Z: ``positive`` against the rest).
        positive: the positive class of ``binary`` mode (and the class ``synthetic_match_positive`` counts).
        oversample_val_positive: in binary mode, oversample validation positives to the negative count (N&Z).
        arms: arms to run, a subset of baseline, classical, synthetic, classical+synthetic.
        seeds: repeats of every arm; repeat k uses seed ``seed + k``.
        synthetic: folder with one sub-folder of generated images per class.
        synthetic_from: a generator run (``cellgen.sampling``) or ``class=RUN,class2=RUN2`` for
            one unconditional run per class; images are generated into ``OUT/synthetic/``.
        synthetic_ratio: synthetic images per class as a fraction of its real training count (K&C: 0.5).
        synthetic_count: synthetic images per class (overrides the ratio when > 0).
        synthetic_match_positive: as many synthetic images as real ``positive`` images (N&Z Table 4).
        synthetic_classes: classes that receive synthetic images (default: every class in multiclass
            mode, the positive class in binary mode).
        limit_class: ``{class: fraction}`` of real training images kept in every arm (scarcity study).
        classical_dihedral: the classical arms flip and turn each image by a multiple of 90 degrees
            (one of the 8 symmetries of the square, exact pixels), before rotation and zoom.
        classical_rotation: maximum rotation in degrees of the classical arm (K&C: rotate and zoom).
        classical_zoom: maximum relative zoom of the classical arm.
        match_synthetic_size: in the arms with synthetic images, every training image (real or
            synthetic) is shrunk to this many pixels and enlarged back with probability
            ``match_synthetic_probability`` (0: off). Set it to the generator's size when that is
            below ``image_size``: otherwise only the synthetic images are blurred, and a classifier
            can learn "blurred means the scarce class" and miss real cells of that class (measured:
            docs/benchmarks.md, basophil study of 2026-12-03). The arms without synthetic images are
            untouched, so their figures (and the scarcity reference) do not change.
        match_synthetic_probability: the chance of that round trip per training image.
        checkpoint_every: epochs between resumable checkpoints.
        save_models: keep ``models/best.keras`` of every arm and seed.
        jobs: classifiers trained at once, each in its own process (single-device strategy only).
            Every run seeds itself, so the results do not depend on it. On CPUs where one fp32
            MobileNetV2 run keeps only one core busy (TensorFlow's depthwise-convolution
            gradients), ``jobs = 2`` on 2 cores nearly halves an experiment's time
            (docs/benchmarks.md, 2026-12-03); keep 1 on a GPU.

    Example:
        >>> config = ClassifierConfig(data="train", val_data="val", test_data="test", backbone="smallcnn",
        ...                           weights="none", arms=["baseline", "classical"])
        >>> config.replace(limit_class="basophil=0.25").limit_class
        {'basophil': 0.25}
    """

    kind: ClassVar[str] = "classifier"
    ranges: ClassVar[dict[str, Range]] = {
        "alpha": above(0), "bn_momentum": between(0, 1, high_open=True), "dropout": between(0, 1, high_open=True),
        "cnn_width": at_least(1), "cnn_blocks": at_least(1), "learning_rate": above(0),
        "early_stopping_patience": at_least(0, note="0 = off"), "class_weights": one_of(*CLASS_WEIGHTS),
        "sampling": one_of(*SAMPLINGS), "steps_per_epoch": at_least(0, note="0 = one pass"),
        "mode": one_of(*MODES), "seeds": at_least(1), "synthetic_ratio": at_least(0),
        "synthetic_count": at_least(0), "classical_rotation": between(0, 360),
        "classical_zoom": between(0, 1, high_open=True), "checkpoint_every": at_least(1),
        "jobs": at_least(1), "match_synthetic_size": at_least(0, note="0 = off"),
        "match_synthetic_probability": between(0, 1),
    }

    image_size: int = 128
    batch_size: int = 32
    epochs: int = 20
    val_data: str = ""
    test_data: str = ""
    backbone: str = "mobilenetv2"
    alpha: float = 0.75
    weights: str = "none"
    bn_momentum: float = 0.9
    freeze_backbone: bool = False
    dropout: float = 0.0
    cnn_width: int = 32
    cnn_blocks: int = 4
    learning_rate: float = 1e-4
    early_stopping_patience: int = 0
    class_weights: str = "none"
    sampling: str = "shuffle"
    steps_per_epoch: int = 0
    mode: str = "multiclass"
    positive: str = ""
    oversample_val_positive: bool = True
    arms: list[str] = dataclasses.field(default_factory=lambda: ["baseline", "synthetic"])
    seeds: int = 1
    synthetic: str = ""
    synthetic_from: str = ""
    synthetic_ratio: float = 0.5
    synthetic_count: int = 0
    synthetic_match_positive: bool = False
    synthetic_classes: list[str] = dataclasses.field(default_factory=list)
    limit_class: dict[str, float] = dataclasses.field(default_factory=dict)
    classical_dihedral: bool = True
    classical_rotation: float = 180.0
    classical_zoom: float = 0.1
    match_synthetic_size: int = 0
    match_synthetic_probability: float = 0.5
    checkpoint_every: int = 1
    save_models: bool = True
    jobs: int = 1

    def validate(self) -> None:
        super().validate()
        from cellgen.classify.models import BACKBONES

        if self.backbone not in BACKBONES:
            raise ConfigError(f"backbone: unknown backbone {self.backbone!r}; choose one of "
                              f"{', '.join(sorted(BACKBONES))}")
        if self.mode == "binary" and not self.positive:
            raise ConfigError("mode 'binary' needs the positive class (--positive CLASS)")
        if not self.arms:
            raise ConfigError("arms: give at least one arm")
        unknown = [arm for arm in self.arms if arm not in ARMS]
        if unknown:
            raise ConfigError(f"arms: unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}")
        if len(set(self.arms)) != len(self.arms):
            raise ConfigError(f"arms: an arm is listed twice in {','.join(self.arms)}")
        if self.match_synthetic_size and self.match_synthetic_size >= self.image_size:
            raise ConfigError(f"match_synthetic_size: {self.match_synthetic_size} must be below image_size "
                              f"{self.image_size} (the generator's smaller size), or 0 for off")
        if self.synthetic and self.synthetic_from:
            raise ConfigError("give either --synthetic DIR or --synthetic-from RUN, not both")
        if self.synthetic_match_positive and self.synthetic_count:
            raise ConfigError("give only one of synthetic_count and synthetic_match_positive")
        if self.synthetic_match_positive and not self.positive:
            raise ConfigError("synthetic_match_positive needs the positive class (--positive CLASS)")
        for name, fraction in self.limit_class.items():
            try:
                value = float(fraction)
            except (TypeError, ValueError):
                raise ConfigError(f"limit_class: {name}={fraction!r} is not a number") from None
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"limit_class: {name}={fraction} must be a fraction in (0, 1]")

    @property
    def uses_synthetic(self) -> bool:
        return any(arm in SYNTHETIC_ARMS for arm in self.arms)

    @property
    def synthetic_amount(self) -> str:
        """Which amount option is in force: ``match_positive``, ``count`` or ``ratio``."""
        if self.synthetic_match_positive:
            return "match_positive"
        if self.synthetic_count > 0:
            return "count"
        return "ratio"
