"""cellgen: synthetic white-blood-cell images to augment rare classes.

A TensorFlow/Keras 3 reimplementation of Klang & Carlberg (2020) and Nilsson &
Zettergren (2023), CellaVision / Lund University master theses. Stages live in
sub-packages: ``data_reader`` (input), ``gan``, ``diffusion``, ``latent``,
``classify`` and ``evaluate``.
"""

import os as _os

# cellgen is written for the TensorFlow backend of Keras 3 (tf.distribute, tf.data).
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's C++ start-up chatter hides the messages users need to see. The scripts show it when
# the user chose a level (remembered here) or asks with --verbose / CELLGEN_VERBOSE=1.
_TF_LOG_LEVEL_FROM_USER = "TF_CPP_MIN_LOG_LEVEL" in _os.environ
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
