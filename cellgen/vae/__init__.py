"""Convolutional (conditional) VAE baseline of Matos (2025), run kind ``cvae``.

- :mod:`cellgen.vae.config`: :class:`CVAEConfig` and the paper's Table 1 grid;
- :mod:`cellgen.vae.networks`: encoder and decoder builders;
- :mod:`cellgen.vae.cvae`: the :class:`CVAE` ``keras.Model`` (BCE + beta * KL train step);
- :mod:`cellgen.vae.train_lib`: :class:`CVAEStage` of the shared training loop, ``resolve_config``, ``train``;
- :mod:`cellgen.vae.sampling`: the sampler used by ``generate.py``.
"""
