"""Hyperparameters of the diffusion stage (run kind ``ddim``).

The defaults are Nilsson & Zettergren (2023) Table 7, the DDIM base model: a
continuous-time DDIM in the style of the keras-io example
(``examples/generative/ddim.py``) with a sigmoid noise schedule (Chen 2023), an
R2U-Net (Alom et al. 2018) with attention gates (Oktay et al. 2018), AdamW,
MAE noise loss and an EMA copy of the network for sampling. The presets under
``configs/`` (``nz2023_ddim_base``, ``nz2023_ddim_finetune``, ``kerasio_ddim64``,
``matos2025_ddpm28``, ``matos2025_ddpm28_deep``, ``ddim_fast``) change these.

Example:
    >>> config = DiffusionConfig(image_size=32, depth=3, base_width=8)
    >>> config.widths_resolved()
    [8, 16, 32]
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from cellgen.config import ConfigError, FinetuneConfig, above, at_least, between, every, one_of
from cellgen.data.attributes import split_item, vocabulary_from_items, vocabulary_items
from cellgen.diffusion.schedules import SCHEDULES, schedule_from_config

BLOCK_KINDS = ("r2", "residual", "plain")
NORMALIZATIONS = ("batch", "group", "none")
POOLINGS = ("max", "average")
LOSSES = ("mae", "mse")
TIME_MODES = ("continuous", "discrete")
PREDICTIONS = ("noise", "velocity", "image")
LOSS_WEIGHTINGS = ("uniform", "min_snr")
AUGMENTATIONS = ("none", "dihedral")
# "auto": DDPM ancestral sampling over all T steps for discrete-time runs, DDIM otherwise (today's behaviour).
SAMPLERS = ("auto", "ddim", "dpmpp_2m", "heun", "ddpm")
# What sampling does to each step's clean-image estimate (solvers.thresholded_denoiser).
THRESHOLDS = ("none", "static", "dynamic")

# Fields that define the network and the data normalisation: a fine-tuned run must
# keep them from its base run, or the base weights would not fit.
ARCHITECTURE_FIELDS = (
    "image_size", "depth", "base_width", "widths", "block_kind", "block_depth", "recurrence",
    "attention_gates", "pooling", "normalization", "group_norm_groups", "embedding_dims", "embedding_max_frequency",
    "normalize_images", "time_mode",
    "conditional", "class_names", "class_embedding_dims", "condition_dims", "prediction",
    "attributes", "attribute_values",
)


@dataclasses.dataclass
class DiffusionConfig(FinetuneConfig):
    """Config of ``train_ddim.py`` (run kind ``ddim``). Defaults: N&Z 2023 Table 7.

    Attributes:
        crop: center crop before resizing (N&Z: 192 px crops of the CellaVision images).
        depth: U-Net levels ("network depth", N&Z: 5); the image is pooled ``depth - 1`` times.
        base_width: features of the first level, doubled per level (N&Z: 16).
        widths: explicit features per level (overrides ``depth``/``base_width``; keras-io: 32,64,96,128).
        block_kind: ``r2`` (recurrent residual unit, Alom et al. 2018), ``residual`` (keras-io) or ``plain``.
        block_depth: blocks per level in the encoder and in the decoder.
        recurrence: recurrent steps t of an R2 unit (Alom et al.: t = 2).
        attention_gates: attention gates (Oktay et al. 2018) on the skip connections.
        pooling: ``max`` (N&Z) or ``average`` (keras-io) down-sampling.
        normalization: ``batch`` (keras-io, N&Z), ``group`` or ``none``.
        batch_norm_momentum: moving-statistics momentum of batch norm (see DEVELOPERS.md).
        group_norm_groups: groups of group normalisation.
        embedding_dims: sinusoidal embedding of the noise variance (N&Z: 32).
        embedding_max_frequency: its largest frequency (N&Z: 1000; the smallest is 1).
        schedule: ``sigmoid``, ``cosine``, ``cosine_chen``, ``linear`` or ``quadratic`` (schedules.py).
        schedule_start, schedule_end, schedule_tau: Chen (2023) parameters (N&Z: 0, 3, 0.6).
        min_signal_rate, max_signal_rate: clip of the signal rate (N&Z: 0.01 and 0.95).
        time_mode: ``continuous`` (DDIM, keras-io) or ``discrete`` (DDPM with ``timesteps`` steps).
        timesteps: T of the discrete mode (Matos: 500).
        beta_start, beta_end: linear betas of the discrete mode and of the ``linear``/``quadratic``
            continuous schedules (Ho et al. 2020: 1e-4 and 0.02).
        loss: ``mae`` (keras-io, N&Z) or ``mse`` (Ho et al. 2020, Matos) on the predicted noise.
        optimizer: ``adamw`` (N&Z) or ``adam`` (Matos).
        learning_rate, weight_decay: AdamW (N&Z: 3e-4, 1e-4).
        ema: decay of the EMA copy used for sampling and validation (keras-io: 0.999).
        ema_warmup: use decay ``min(ema, (1 + step) / (10 + step))`` so that short runs do not sample
            from a copy that is still mostly the random initialisation.
        normalize_images: standardise each colour channel with the training set's mean and std
            before adding noise (keras-io's Normalization layer).
        normalizer_batches: batches used to estimate that mean and std.
        diffusion_steps: DDIM sampling steps of the sample grids and of ``generate.py`` (N&Z: 20).
        sample_eta: eta of the sample grids (0 = deterministic DDIM).
        contrast: N&Z section 6.2 contrast post-processing for ``generate.py`` (0 = off; thesis: 20).
        val_data: optional validation folder: the EMA network's noise loss (and KID) each epoch.
        kid_encoder: feature extractor of the validation KID: ``none`` (off), ``inception``
            (InceptionV3, as keras-io) or a classifier (``.keras`` file or run directory),
            see :func:`cellgen.evaluate.features.load_extractor`. Needs ``val_data``.
        kid_weights: InceptionV3 weights: ``imagenet``, a local no-top weights file, or ``none``
            (random weights: tests and timing only).
        kid_image_size: input size of InceptionV3 (keras-io: 75).
        kid_diffusion_steps: DDIM steps of the images KID is computed on (keras-io: 5).
        kid_images: validation images (and as many generated ones) KID is computed on.
        save_every: keep ``models/diffusion-epoch-NNNN.keras`` every this many epochs (0: only the last).
        sample_every, checkpoint_every, keep_checkpoints: see :class:`cellgen.config.GeneratorRunConfig`.
        grid_size: images in the sample grid (a square number reads best).
        run_eagerly: run the training step without ``tf.function`` (debugging; slower for real runs).
        class_name: train on this class only (``--class``; with ``finetune_from``, N&Z's per-class
            fine-tuning). The run then samples that class.
        finetune_from: base ``ddim`` run whose online and EMA weights and image statistics this run
            starts from (``--finetune-from RUN[/EPOCH]``).
        finetune_epoch: saved epoch of the base run that was loaded (0: its latest)
            (the three: :class:`cellgen.config.FinetuneConfig`).
        conditional: class-conditional U-Net (a learned class embedding joined to the noise
            embedding, FiLM scale and shift on every block; see unet.py) trained with label dropout
            and sampled with classifier-free guidance (Ho & Salimans 2022). False: today's network.
        class_names: the label vocabulary of a conditional network (id ``i`` is ``class_names[i]``;
            id ``len(class_names)`` is "no class"). Set by the training loop from the data's classes;
            a fine-tune keeps its base run's (so a one-class fine-tune still names its class).
        class_embedding_dims: size of the learned class embedding.
        condition_dims: width of the MLP that joins the noise and class embeddings.
        label_dropout: probability of replacing a training label by the "no class" id, which trains
            the unconditional half of classifier-free guidance (Ho & Salimans 2022: 0.1-0.2).
        guidance: default guidance weight w of sampling: ``eps_u + w (eps_c - eps_u)``
            (0 = unconditional, 1 = plain conditional).
        prediction: what the network predicts: ``noise`` (eps, keras-io / N&Z), ``velocity``
            (v = alpha eps - sigma x0, Salimans & Ho 2022) or ``image`` (x0).
        loss_weighting: ``uniform`` or ``min_snr`` (Hang et al. 2023, weight ``min(SNR, gamma)`` on
            the x0 error, expressed for the prediction target; see ddim.py).
        min_snr_gamma: gamma of ``min_snr`` (Hang et al.: 5).
        augment: ``none`` or ``dihedral``: a random flip / 90-degree rotation (one of the 8 symmetries
            of the square) of every training image, drawn inside the training step.
        sampler: default solver of the sample grids and ``generate.py``: ``ddim``, ``dpmpp_2m``
            (DPM-Solver++(2M), Lu et al. 2022), ``heun`` (Karras et al. 2022, 2 network calls per step),
            ``ddpm`` (discrete-time runs) or ``auto`` (``ddpm`` for discrete-time runs, else ``ddim``).
        sample_threshold: what sampling does to each step's clean-image estimate: ``none``,
            ``static`` (clip to the data range) or ``dynamic`` (Saharia et al. 2022: shrink each image
            by its ``threshold_percentile`` quantile of |x0| when that exceeds 1); see
            ``solvers.thresholded_denoiser``. Default ``static``: it cut the domain FID of guided
            and unguided samples alike (guidance 2: 74 -> 19; ``ddim_fast``: 194 -> 30; measured in
            docs/benchmarks.md, "Class-conditional DDIM"); ``none`` is keras-io's and N&Z's sampling.
        threshold_percentile: quantile of ``dynamic`` (Imagen: 0.995).
        attributes: attribute columns (e.g. WBCAtt's ``nucleus_shape``) a conditional network also
            conditions on: one learned embedding per attribute (its own "no value" id) joined to
            the class embedding; each is dropped independently with ``label_dropout`` in training,
            so that sampling can request any subset (see unet.py and ddim.py). Empty: off.
        attribute_values: the attributes' vocabulary as ``column=value`` items (the id of a value
            is its position among its column's items; ``len`` of them is "no value"). Set by the
            training loop from the attribute table; a fine-tune keeps its base run's.
        attributes_csv: attribute table of the training images (WBCAtt's layout:
            ``split,class,file,<attributes>``), matched to the images of ``data`` by class and file
            name (see :mod:`cellgen.data.attributes`). Not needed when ``data`` is such a table.
        select: train on the images a ``COLUMN=VALUE`` selection names only, e.g.
            ``["class=neutrophil", "nucleus_shape=segmented-multilobed"]`` (``--select``; with
            ``finetune_from``, N&Z's fine-tune on one abnormality). Needs an attribute table.
    """

    kind: ClassVar[str] = "ddim"
    ranges = {
        "block_kind": one_of(*BLOCK_KINDS),
        "normalization": one_of(*NORMALIZATIONS),
        "pooling": one_of(*POOLINGS),
        "loss": one_of(*LOSSES),
        "time_mode": one_of(*TIME_MODES),
        "optimizer": one_of("adamw", "adam"),
        "schedule": one_of(*SCHEDULES),
        **dict.fromkeys(("depth", "base_width", "block_depth", "recurrence", "normalizer_batches", "diffusion_steps",
                         "kid_diffusion_steps", "grid_size", "class_embedding_dims",
                         "condition_dims"), at_least(1)),
        "widths": every(at_least(1)),
        "batch_norm_momentum": between(0, 1, high_open=True),
        "embedding_max_frequency": above(1),
        "timesteps": at_least(2),
        "learning_rate": above(0),
        "weight_decay": at_least(0),
        "ema": between(0, 1, high_open=True),
        "sample_eta": between(0, 1),
        "contrast": between(0, 127, high_open=True),
        "kid_images": at_least(2),
        "prediction": one_of(*PREDICTIONS),
        "loss_weighting": one_of(*LOSS_WEIGHTINGS),
        "augment": one_of(*AUGMENTATIONS),
        "sampler": one_of(*SAMPLERS),
        "sample_threshold": one_of(*THRESHOLDS),
        "threshold_percentile": between(0.5, 1),
        "min_snr_gamma": above(0),
        "label_dropout": between(0, 1, high_open=True),
        "guidance": at_least(0),
    }

    image_size: int = 192
    crop: float = 0.0
    epochs: int = 60
    batch_size: int = 20
    # network
    depth: int = 5
    base_width: int = 16
    widths: list[int] = dataclasses.field(default_factory=list)
    block_kind: str = "r2"
    block_depth: int = 1
    recurrence: int = 2
    attention_gates: bool = True
    pooling: str = "max"
    normalization: str = "batch"
    batch_norm_momentum: float = 0.99
    group_norm_groups: int = 8
    embedding_dims: int = 32
    embedding_max_frequency: float = 1000.0
    # noise schedule
    schedule: str = "sigmoid"
    schedule_start: float = 0.0
    schedule_end: float = 3.0
    schedule_tau: float = 0.6
    min_signal_rate: float = 0.01
    max_signal_rate: float = 0.95
    time_mode: str = "continuous"
    timesteps: int = 500
    beta_start: float = 1e-4
    beta_end: float = 0.02
    # training
    loss: str = "mae"
    optimizer: str = "adamw"
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    ema: float = 0.999
    ema_warmup: bool = False
    normalize_images: bool = True
    normalizer_batches: int = 20
    # sampling and evaluation
    diffusion_steps: int = 20
    sample_eta: float = 0.0
    contrast: float = 0.0
    val_data: str = ""
    kid_encoder: str = "none"
    kid_weights: str = "imagenet"
    kid_image_size: int = 75
    kid_diffusion_steps: int = 5
    kid_images: int = 64
    # run directory (sample_every, checkpoint_every, keep_checkpoints: GeneratorRunConfig's)
    save_every: int = 0
    grid_size: int = 16
    run_eagerly: bool = False
    # class conditioning and classifier-free guidance
    conditional: bool = False
    class_names: list[str] = dataclasses.field(default_factory=list)
    class_embedding_dims: int = 32
    condition_dims: int = 128
    label_dropout: float = 0.15
    guidance: float = 2.0
    # training recipe
    prediction: str = "noise"
    loss_weighting: str = "uniform"
    min_snr_gamma: float = 5.0
    augment: str = "none"
    sampler: str = "auto"
    sample_threshold: str = "static"
    threshold_percentile: float = 0.995
    # morphological attributes (WBCAtt)
    attributes: list[str] = dataclasses.field(default_factory=list)
    attribute_values: list[str] = dataclasses.field(default_factory=list)
    attributes_csv: str = ""
    select: list[str] = dataclasses.field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """Classes of the conditional network (0 for an unconditional one)."""
        return len(self.class_names) if self.conditional else 0

    def with_data_classes(self, classes) -> "DiffusionConfig":
        """The config a conditional run trains with on data whose classes are ``classes``.

        Unconditional configs are returned unchanged. A conditional config without
        ``class_names`` takes ``classes``; one that has them (a fine-tune or a resumed run)
        keeps them and every data class must be one of them.

        Raises:
            ConfigError: a data class the network has no id for.
        """
        classes = list(classes)
        if not self.conditional:
            return self
        if not self.class_names:
            return self.replace(class_names=classes)
        unknown = [name for name in classes if name not in self.class_names]
        if unknown:
            raise ConfigError(f"class(es) {', '.join(unknown)} of the data are not among the conditional "
                              f"network's class_names ({', '.join(self.class_names)})")
        return self

    def attribute_vocabulary(self) -> dict[str, list[str]]:
        """``{attribute: values}`` of a network conditioned on attributes (empty when off or not yet set)."""
        if not self.attributes or not self.attribute_values:
            return {}
        return vocabulary_from_items(self.attribute_values, self.attributes, error=ConfigError)

    def with_data_attributes(self, vocabulary: dict[str, list[str]]) -> "DiffusionConfig":
        """The config a run conditioned on attributes trains with: ``attribute_values`` from the data's
        table (``vocabulary``), unless already set (a fine-tune or a resumed run keeps its own)."""
        if not self.attributes or self.attribute_values:
            return self
        return self.replace(attribute_values=vocabulary_items({name: vocabulary[name] for name in self.attributes}))

    def label_map(self, classes):
        """int32 array mapping a data reader's label ids (ids into ``classes``) to network ids."""
        import numpy as np

        return np.array([self.class_names.index(name) for name in classes], np.int32)

    def widths_resolved(self) -> list[int]:
        """Features per U-Net level: ``widths`` if given, else ``base_width * 2**level``."""
        if self.widths:
            return list(self.widths)
        return [self.base_width * 2 ** level for level in range(self.depth)]

    def validate(self) -> None:
        super().validate()
        if self.normalization == "group":
            widths = self.widths_resolved()
            if self.group_norm_groups < 1 or any(width % self.group_norm_groups for width in widths):
                raise ConfigError(f"group_norm_groups={self.group_norm_groups} must divide every level's "
                                  f"width {widths}")
        if self.embedding_dims < 2 or self.embedding_dims % 2:
            raise ConfigError(f"embedding_dims must be an even number >= 2, got {self.embedding_dims}")
        schedule_from_config(self)  # the schedule's own parameters and the signal-rate clip
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ConfigError(f"need 0 < beta_start < beta_end < 1, got {self.beta_start} and {self.beta_end}")
        if self.kid_image_size < 75 and self.kid_encoder == "inception":
            raise ConfigError(f"kid_image_size must be >= 75 for InceptionV3, got {self.kid_image_size}")
        if self.sampler == "ddpm" and self.time_mode != "discrete":
            raise ConfigError("sampler='ddpm' needs time_mode='discrete' (ancestral sampling over T steps)")
        if self.sampler in ("dpmpp_2m", "heun") and self.sample_eta:
            raise ConfigError(f"sample_eta={self.sample_eta}: the {self.sampler} sampler is deterministic "
                              "(eta applies to ddim only)")
        if len(set(self.class_names)) != len(self.class_names) or any(not name for name in self.class_names):
            raise ConfigError(f"class_names must be distinct and non-empty, got {self.class_names}")
        if self.class_name and self.conditional and self.class_names and self.class_name not in self.class_names:
            raise ConfigError(f"class_name={self.class_name!r} is not one of the conditional network's "
                              f"class_names ({', '.join(self.class_names)})")
        if self.attributes and not self.conditional:
            raise ConfigError("attributes need conditional = true (attribute embeddings join the class embedding)")
        if len(set(self.attributes)) != len(self.attributes) or any(not name for name in self.attributes):
            raise ConfigError(f"attributes must be distinct and non-empty, got {self.attributes}")
        if self.attribute_values:
            if not self.attributes:
                raise ConfigError("attribute_values without attributes (the vocabulary of which attributes?)")
            self.attribute_vocabulary()
        for item in self.select:
            split_item(item, "select", ConfigError)
