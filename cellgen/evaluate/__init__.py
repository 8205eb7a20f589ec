"""Evaluating generated cell images: FID, KID, precision/recall, density/coverage,
a memorisation check and an expert real-vs-synthetic test kit.

Modules:

- :mod:`~cellgen.evaluate.features`: InceptionV3 and domain-classifier feature
  extractors, streaming extraction with a progress bar, the real-set cache;
- :mod:`~cellgen.evaluate.fid`: FID (Heusel et al. 2017) with a careful matrix
  square root, and FID extrapolated to infinite N (Chong & Forsyth 2020);
- :mod:`~cellgen.evaluate.kid`: KID (Bińkowski et al. 2018), unbiased;
- :mod:`~cellgen.evaluate.prdc`: improved precision and recall (Kynkäänniemi et
  al. 2019), density and coverage (Naeem et al. 2020);
- :mod:`~cellgen.evaluate.memorization`: nearest training image of each generated
  image, in feature and pixel space;
- :mod:`~cellgen.evaluate.generated`: :func:`evaluate_generated`, all of the above
  over several seeds, with a JSON/Markdown report and image grids;
- :mod:`~cellgen.evaluate.expert`: the expert test kit (K&C Table 2, N&Z Tables 9-14);
- :mod:`~cellgen.evaluate.tasks`: the scripts' work as typed calls
  (:func:`evaluate_generator` with :class:`GeneratorEvaluation`, :func:`make_expert_kit`
  with :class:`ExpertKitOptions`), each with its equivalent command line.

Why a domain network matters
----------------------------
FID and KID are distances between feature distributions, so they are only as
good as the features. The standard features come from InceptionV3 trained on
ImageNet photographs of everyday objects. For white blood cells this has three
problems:

1. ImageNet features weigh blood-cell detail poorly. What separates a band from
   a segmented neutrophil, or a hypergranular or Döhle-body cell from a normal
   one, is nuclear lobes, granules and small cytoplasmic inclusions; ImageNet
   features respond mostly to overall colour, texture and shape, so a generator
   can score well while getting the diagnostic detail wrong (and vice versa).
   N&Z report FIDs of 386.5 (GAN) and 353.0 (DDIM) for images that a medical
   expert mostly could not tell from real ones: on this domain, absolute
   Inception FIDs say little.
2. FID on small images is of doubtful meaning. The cells here are 64-192 px
   (Matos: 28 px) and are upsampled to 299 px, far from the statistics Inception
   was trained on; the interpolation itself shifts the features.
3. FID is biased in N: its expected value falls as the number of images grows
   (Chong & Forsyth 2020), so FIDs are only comparable at the same N, and the
   rare classes this project is about have a few hundred real images, far below
   the 10,000 recommended (N&Z section 4.4). KID is unbiased and is reported
   alongside; :func:`fid_infinity` extrapolates FID to infinite N.

A *domain* extractor, the penultimate layer of a classifier trained on blood
cells (``--extractor runs/classifier`` with a model from
``evaluate_classifier.py``), measures distances in features that separate the
cell classes, at the images' own resolution. Report both: Inception for
comparison with the literature, the domain network for what matters here.

Example:
    >>> from cellgen.evaluate import evaluate_generated                        # doctest: +SKIP
    >>> result = evaluate_generated("pbc128/val", "synth/basophil", "runs/clf",
    ...                             n=1000, seeds=5, class_name="basophil")      # doctest: +SKIP
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "EvaluationError": "errors", "MetricError": "errors",
    "FeatureExtractor": "features", "InceptionExtractor": "features", "ClassifierExtractor": "features",
    "FeatureCache": "features", "FeatureSet": "features", "load_extractor": "features",
    "extract_features": "features", "features_of_source": "features",
    "frechet_distance": "fid", "fid_from_features": "fid", "fid_infinity": "fid",
    "feature_statistics": "fid", "trace_sqrt_product": "fid",
    "kernel_inception_distance": "kid",
    "precision_recall_density_coverage": "prdc",
    "memorization_statistics": "memorization", "nearest_neighbours": "memorization",
    "evaluate_generated": "generated", "markdown_report": "generated",
    "make_kit": "expert", "score_kit": "expert", "score_answers": "expert", "read_answers": "expert",
    "format_tables": "expert", "require_inception_weights": "features",
    "GeneratorEvaluation": "tasks", "evaluate_generator": "tasks", "ExpertKitOptions": "tasks",
    "make_expert_kit": "tasks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # Lazy: the expert kit and the NumPy metrics must not pay for importing TensorFlow.
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
