"""Classifier augmentation benchmark: does adding synthetic images improve a classifier?

Klang & Carlberg (2020, sections 4.7 and 5.4) fine-tune Xception with and
without AC-GAN images (+50 % per class; weighted F1 0.946 -> 0.953) and a
classical rotate/zoom baseline; Nilsson & Zettergren (2023, section 4.4,
Table 4) fine-tune MobileNetV2 (alpha 0.75) on one abnormal class against the
rest, adding as many DDIM images as there are real abnormal ones.

Modules: ``config`` (:class:`ClassifierConfig`), ``models`` (backbones and the
softmax head), ``mixing`` (which files each arm sees), ``metrics`` (F1 and
friends from a confusion matrix), ``prepare`` (checked splits and the training lists of
every arm and seed), ``train_lib`` (:class:`ClassifierStage` of the shared training loop,
:func:`train_classifier_run`, :func:`run_experiment`) and ``report`` (report.json /
report.md / figures).

Example:
    >>> from cellgen.classify import ClassifierConfig, run_experiment   # doctest: +SKIP
    >>> report = run_experiment(config)                                 # doctest: +SKIP
"""

from cellgen.classify.config import ARMS, ClassifierConfig
from cellgen.classify.metrics import classification_metrics, confusion_matrix

__all__ = ["ARMS", "ClassifierConfig", "classification_metrics", "confusion_matrix", "build_classifier",
           "run_experiment", "train_classifier_run", "ClassifierStage"]


def __getattr__(name):
    # models and training import TensorFlow; load them on first use only
    if name == "build_classifier":
        from cellgen.classify.models import build_classifier

        return build_classifier
    if name in ("run_experiment", "train_classifier_run", "ClassifierStage"):
        from cellgen.classify import train_lib

        return getattr(train_lib, name)
    raise AttributeError(f"module 'cellgen.classify' has no attribute {name!r}")
