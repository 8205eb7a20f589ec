"""Image-to-latent encoder and latent-space experiments (Klang & Carlberg 2020, sections 4.6, 5.3).

Modules:

- :mod:`cellgen.latent.config`: :class:`LatentEncoderConfig` (run kind ``latent_encoder``);
- :mod:`cellgen.latent.networks`: :func:`build_encoder`, shaped like the Vanilla-GAN discriminator
  with a linear ``latent_dim`` output;
- :mod:`cellgen.latent.model`: :class:`LatentEncoderTrainer` (L1 loss through the frozen generator);
- :mod:`cellgen.latent.train_lib`: :class:`EncoderStage` of the shared training loop,
  :func:`resolve_config`, :func:`train`;
- :mod:`cellgen.latent.sampling`: :func:`load_encoder_run`, :func:`load_encoder`, :func:`reconstruct`;
- :mod:`cellgen.latent.explore`: :func:`interpolate_latents` (eq. 40), :func:`perturb_latents` (eq. 42).

Example::

    from cellgen.latent import load_encoder_run, reconstruct, perturb_latents
    encoder, generator, config = load_encoder_run("runs/encoder")
    latents, reconstructions = reconstruct(encoder, generator, images)
"""

from cellgen.latent.config import LatentEncoderConfig
from cellgen.latent.explore import DEFAULT_VARIANCE, interpolate_latents, load_image_files, perturb_latents
from cellgen.latent.model import LatentEncoderTrainer, l1_reconstruction_loss
from cellgen.latent.networks import build_encoder
from cellgen.latent.sampling import load_encoder, load_encoder_run, reconstruct
from cellgen.latent.train_lib import EncoderStage, resolve_config, train

__all__ = ["LatentEncoderConfig", "LatentEncoderTrainer", "l1_reconstruction_loss", "load_encoder",
           "load_encoder_run", "reconstruct", "EncoderStage", "resolve_config", "train", "DEFAULT_VARIANCE",
           "interpolate_latents", "load_image_files", "perturb_latents", "build_encoder"]
