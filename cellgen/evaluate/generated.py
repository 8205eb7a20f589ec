"""Evaluating generated images against real ones: metrics over seeds, memorisation, grids, report.

:func:`evaluate_generated` is the library entry point used by
``evaluate_generator.py`` and by the scarcity study. Following Matos (2025,
section 3.4: FID of 10,000 real vs 10,000 generated images, mean and standard
deviation over 5 seeds), each seed draws ``n`` real images (a random subset of
the real features, computed once and cached) and ``n`` generated images (new
samples from a generator, or a random subset of a folder of generated images
when it holds more than ``n``), and computes FID, KID, precision, recall,
density and coverage. Both sets always have the same size, ``min(n, real images,
generated images)``: FID's bias and the meaning of density and coverage depend on it. The summary reports the mean and the sample standard
deviation (N - 1) over seeds.

Images are compared at one resolution, ``image_size`` (by default the generated
images' size): real images are read at it with the same crop as the generator's
training data, then both go through the same resize into the extractor.

Example:
    >>> result = evaluate_generated("pbc128/val", "synthetic/basophil", "inception",
    ...                             n=1000, seeds=3, class_name="basophil", out_dir="eval/b")  # doctest: +SKIP
    >>> result["summary"]["fid"]                                                           # doctest: +SKIP
    {'mean': ..., 'std': ..., 'values': [...]}
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cellgen.evaluate.errors import EvaluationError
from cellgen.evaluate.features import (FeatureCache, FeatureSet, extract_features,
                                       features_of_source, load_extractor, pixels_of_source, read_files)
from cellgen.evaluate.fid import fid_from_features, fid_infinity
from cellgen.evaluate.kid import kernel_inception_distance
from cellgen.evaluate.memorization import memorization_statistics, pixel_vectors
from cellgen.evaluate.prdc import precision_recall_density_coverage
from cellgen.sampling import generated_set_seed

METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")

MARKDOWN_NOTES = """\
Notes: FID is biased in n (its expectation falls with the number of images,
Chong & Forsyth 2020): compare FIDs only at equal n and extractor. KID is
unbiased (it can be slightly negative when the sets match). Precision and
density measure fidelity, recall and coverage diversity (low recall/coverage:
mode collapse). With ImageNet Inception features, small cell images are
upsampled to 299 px and judged by features trained on everyday objects; a
domain classifier (--extractor PATH) weighs cell morphology better.
"""


def _mean_std(values: list[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "values": [float(value) for value in array]}


def _is_sampler(value) -> bool:
    return hasattr(value, "sample") and hasattr(value, "image_size")


def _resize_uint8_or_float(images: np.ndarray, size: int) -> np.ndarray:
    """Resizes float images with OpenCV like the DataReader (area when shrinking, cubic when enlarging)."""
    import cv2

    if images.shape[1:3] == (size, size):
        return images
    method = cv2.INTER_AREA if images.shape[1] > size else cv2.INTER_CUBIC
    resized = np.stack([cv2.resize(image, (size, size), interpolation=method) for image in images])
    return resized if images.dtype == np.uint8 else np.clip(resized, -1.0, 1.0)


def _generated_size(generated) -> int:
    from cellgen.data import DataReader

    if _is_sampler(generated):
        return int(generated.image_size)
    if isinstance(generated, np.ndarray):
        return int(generated.shape[1])
    reader = DataReader(generated, batch_size=1, shuffle=False, workers=0)
    height, width = reader.image_shape[:2]
    if height != width:
        raise EvaluationError(f"{generated}: generated images are {width}x{height}; pass --size for square images")
    return int(height)


def _sampler_batches(sampler, count: int, seed: int, class_name: str | None, batch_size: int,
                     image_size: int) -> Iterator[np.ndarray]:
    for batch_index, start in enumerate(range(0, count, batch_size)):
        size = min(batch_size, count - start)
        images = np.asarray(sampler.sample(size, seed=generated_set_seed(0, seed) + batch_index, class_name=class_name,
                                           batch_size=size), dtype=np.float32)
        yield _resize_uint8_or_float(images, image_size)


def _array_batches(images: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        yield batch.astype(np.float32) / 127.5 - 1.0 if batch.dtype == np.uint8 else batch.astype(np.float32)


def _real_feature_set(real, extractor, image_size, crop, class_name, batch_size, workers, cache, progress):
    if isinstance(real, FeatureSet):
        return real
    if isinstance(real, np.ndarray):
        images = _resize_uint8_or_float(real, image_size)
        features, _ = extract_features(extractor, _array_batches(images, batch_size), total=len(images),
                                       description="real features", progress=progress)
        return FeatureSet(features, [], np.zeros(len(features), np.int32), ["real"], "<array>", image_size,
                          extractor.name)
    return features_of_source(real, extractor, image_size, crop=crop, class_filter=class_name,
                              batch_size=batch_size, workers=workers, cache=cache, progress=progress)


def _train_class_filter(train, class_name):
    """The class filter for the memorisation reference: the class, when the source has it."""
    from cellgen.data import DataReader

    if class_name is None:
        return None
    reader = DataReader(train, batch_size=1, shuffle=False, workers=0)
    return class_name if reader.labelled and class_name in reader.classes else None


def evaluate_generated(real, generated, extractor="inception", n: int = 10_000, seeds: int = 5, *,
                       image_size: int | None = None, crop=None, class_name: str | None = None,
                       train=None, train_crop=None, nearest_k: int = 5, kid_subset_size: int = 1000,
                       kid_subsets: int = 100, memorization: bool = True, memorization_n: int = 2000,
                       memorization_quantile: float = 0.05, pixel_size: int = 32,
                       with_fid_infinity: bool = False, batch_size: int = 64, cache_dir=None,
                       use_cache: bool = True, workers: int = 2, progress: bool = True, out_dir=None,
                       grid_count: int = 36, inception_weights="imagenet", extractor_size: int | None = None,
                       precision: str = "fp32") -> dict[str, Any]:
    """FID, KID, precision/recall and density/coverage over seeds, plus a memorisation check.

    Args:
        real: real images: a folder (class folders or flat) or CSV read with the DataReader,
            an array (N, H, W, 3) in [-1, 1] or uint8, or a :class:`FeatureSet`.
        generated: a folder of generated images, an array, or a sampler
            (``cellgen.sampling.load_sampler(run)``) that draws ``n`` new images per seed.
        extractor: ``"inception"``, a classifier ``.keras`` path or run directory, or a
            :class:`FeatureExtractor`.
        n: images per set and seed (capped at what a folder holds; the cap is noted).
        seeds: number of seeds (0, 1, ..., seeds - 1).
        image_size: comparison resolution (default: the generated images' size).
        crop: center crop of the real images (the generator's training crop).
        class_name: real class to compare with; also the class a conditional sampler draws.
        train: training images for the memorisation check (default: ``real`` when it is a folder).
        train_crop: crop of ``train`` (default ``crop``).
        nearest_k: k of precision/recall/density/coverage.
        kid_subset_size, kid_subsets: KID subsets (Bińkowski et al. 2018: 1000 and 100).
        memorization: run the memorisation check (generated images of seed 0).
        memorization_n: generated images checked.
        memorization_quantile: quantile of the training NN distances used as threshold.
        pixel_size: side at which pixel-space distances are measured.
        with_fid_infinity: also extrapolate FID to infinitely many samples (Chong & Forsyth 2020).
        batch_size: images per batch when reading, generating and extracting.
        cache_dir, use_cache: where real features are cached, and whether to.
        workers: image-decoding threads.
        progress: progress bars.
        out_dir: when given, writes ``metrics.json``, ``report.md`` and PNG grids there.
        grid_count: images per side of the real/generated grid.
        inception_weights, extractor_size, precision: see :func:`load_extractor`.

    Returns:
        A dict with ``settings``, ``real``, ``generated``, ``per_seed``, ``summary``
        (``{metric: {"mean", "std", "values"}}``), ``memorization`` and ``notes``.

    Raises:
        EvaluationError: bad options or inputs (the message names them).
    """
    started = time.time()
    if seeds < 1:
        raise EvaluationError(f"--seeds must be >= 1, got {seeds}")
    if n < max(2, nearest_k + 1):
        raise EvaluationError(f"--n must be at least {max(2, nearest_k + 1)} (nearest_k={nearest_k}), got {n}")
    if batch_size < 1:
        raise EvaluationError(f"--batch-size must be >= 1, got {batch_size}")
    extractor = load_extractor(extractor, input_size=extractor_size, inception_weights=inception_weights,
                               batch_size=min(batch_size, 64), precision=precision)
    image_size = int(image_size or _generated_size(generated))
    cache = FeatureCache(cache_dir) if use_cache else None
    notes: list[str] = []

    real_set = _real_feature_set(real, extractor, image_size, crop, class_name, batch_size, workers, cache, progress)
    if len(real_set) < max(2, nearest_k + 1):
        raise EvaluationError(f"{real_set.source}: only {len(real_set)} real images; need more than {nearest_k}")

    keep = max(min(n, memorization_n) if memorization else 0, min(grid_count, n))
    sampler = generated if _is_sampler(generated) else None
    fixed_features = None
    kept_generated = None
    generated_info: dict[str, Any]
    if sampler is not None:
        if class_name is not None and getattr(sampler, "classes", None) and class_name not in sampler.classes:
            raise EvaluationError(f"--class {class_name!r} is not one of the run's classes: "
                                  f"{', '.join(sampler.classes)}")
        draw_class = class_name if getattr(sampler, "classes", None) else None
        generated_info = {"source": f"sampler:{getattr(sampler, 'kind', type(sampler).__name__)}",
                          "images_per_seed": n, "class": draw_class}
    else:
        if isinstance(generated, np.ndarray):
            images = _resize_uint8_or_float(generated, image_size)
            fixed_features, kept_generated = extract_features(
                extractor, _array_batches(images, batch_size), total=len(images),
                description="generated features", progress=progress, keep_images=keep)
            source_name = "<array>"
        else:
            from cellgen.data import DataReader

            listing = DataReader(generated, batch_size=1, shuffle=False, workers=0)
            generated_filter = None
            if class_name is not None and listing.labelled and len(listing.classes) > 1:
                if class_name not in listing.classes:
                    raise EvaluationError(f"{generated}: has no class folder {class_name!r} "
                                          f"(classes: {', '.join(listing.classes)})")
                generated_filter = class_name  # a folder per class, e.g. from generate.py --per-class
            reader = DataReader(generated, image_size=image_size, batch_size=batch_size, shuffle=False,
                                workers=workers, class_filter=generated_filter)
            fixed_features, kept_generated = extract_features(
                extractor, reader.epoch(0), total=reader.num_images, description="generated features",
                progress=progress, keep_images=keep)
            source_name = os.fspath(generated)
        if len(fixed_features) < max(2, nearest_k + 1):
            raise EvaluationError(f"{source_name}: only {len(fixed_features)} generated images; "
                                  f"need more than {nearest_k}")
        generated_info = {"source": source_name, "images": int(len(fixed_features))}
    # Both sets get the same size: FID's bias and the meaning of density and coverage depend on it.
    count = min(n, len(real_set), len(fixed_features) if fixed_features is not None else n)
    if len(real_set) < n:
        notes.append(f"the real set has {len(real_set)} images: n={count} per set and seed instead of {n}")
    if fixed_features is not None and len(fixed_features) < n:
        notes.append(f"the generated set has {len(fixed_features)} images: n={count} per set and seed "
                     f"instead of {n}")
    if sampler is not None:
        generated_info["images_per_seed"] = count

    per_seed = []
    for seed in range(seeds):
        real_rng = np.random.default_rng([seed, 1])
        real_index = (np.arange(len(real_set)) if count >= len(real_set)
                      else np.sort(real_rng.choice(len(real_set), size=count, replace=False)))
        real_features = real_set.features[real_index]
        if sampler is not None:
            generated_features, images = extract_features(
                extractor, _sampler_batches(sampler, count, seed, draw_class, batch_size, image_size), total=count,
                description=f"generating + features (seed {seed})", progress=progress,
                keep_images=keep if seed == 0 else 0)
            if seed == 0:
                kept_generated = images
        elif len(fixed_features) > count:
            generated_rng = np.random.default_rng([seed, 2])
            generated_features = fixed_features[np.sort(generated_rng.choice(len(fixed_features), size=count,
                                                                             replace=False))]
        else:
            generated_features = fixed_features
        row: dict[str, Any] = {"seed": seed, "n_real": int(len(real_features)),
                               "n_generated": int(len(generated_features))}
        row["fid"] = fid_from_features(real_features, generated_features)
        kid = kernel_inception_distance(real_features, generated_features, subset_size=kid_subset_size,
                                        subsets=kid_subsets, seed=seed)
        row["kid"], row["kid_std"] = kid["kid"], kid["kid_std"]
        row.update(precision_recall_density_coverage(real_features, generated_features, nearest_k=nearest_k))
        if with_fid_infinity:
            row["fid_infinity"] = fid_infinity(real_features, generated_features, seed=seed)["fid_infinity"]
        per_seed.append(row)
        if progress:
            print(f"seed {seed}: " + ", ".join(f"{name} {row[name]:.4g}" for name in METRICS), flush=True)
    summary = {name: _mean_std([row[name] for row in per_seed])
               for name in METRICS + (("fid_infinity",) if with_fid_infinity else ())}

    result: dict[str, Any] = {
        "settings": {"n": n, "n_used": count, "seeds": seeds, "image_size": image_size, "crop": crop, "class": class_name,
                     "nearest_k": nearest_k, "kid_subset_size": kid_subset_size, "kid_subsets": kid_subsets,
                     "memorization_quantile": memorization_quantile, "pixel_size": pixel_size,
                     "extractor": extractor.describe()},
        "real": {"source": real_set.source, "images": len(real_set), "from_cache": real_set.from_cache},
        "generated": generated_info,
        "per_seed": per_seed,
        "summary": summary,
        "notes": notes,
    }

    memorization_images: dict[str, Any] = {}
    if memorization:
        train_source = train if train is not None else (real if isinstance(real, (str, os.PathLike)) else None)
        if train_source is None:
            notes.append("memorisation check skipped: no training folder (pass train=...)")
        else:
            result["memorization"], memorization_images = _memorization(
                train_source, train_crop if train_crop is not None else crop, class_name, real, real_set, crop,
                kept_generated[:memorization_n], extractor, image_size, pixel_size, memorization_quantile,
                batch_size, workers, cache, progress)
    result["seconds"] = round(time.time() - started, 1)
    if out_dir is not None:
        write_report(result, out_dir, real_set, kept_generated[:grid_count], crop, memorization_images,
                     grid_count=grid_count, workers=workers)
    return result


def _memorization(train, train_crop, class_name, real, real_set, real_crop, generated_images, extractor,
                  image_size, pixel_size, quantile, batch_size, workers, cache, progress):
    """Runs the memorisation check in feature and pixel space; returns (report, images for the PNGs)."""
    train_filter = _train_class_filter(train, class_name)
    same_as_real = (isinstance(real, (str, os.PathLike)) and os.path.abspath(os.fspath(train)) ==
                    os.path.abspath(os.fspath(real)) and train_crop == real_crop and train_filter == class_name)
    train_set = real_set if same_as_real else features_of_source(
        train, extractor, image_size, crop=train_crop, class_filter=train_filter, batch_size=batch_size,
        workers=workers, cache=cache, progress=progress, description="training features")
    generated_features = extractor(generated_images)
    train_pixels, train_files = pixels_of_source(train, pixel_size, crop=train_crop, class_filter=train_filter,
                                                 workers=workers, progress=progress)
    generated_pixels = _resize_uint8_or_float(generated_images, pixel_size)
    pixel_count = pixel_size * pixel_size * 3
    report: dict[str, Any] = {"train": os.fspath(train), "train_images": len(train_files),
                              "generated_images": int(len(generated_images))}
    pairs = {}
    for space, generated_values, train_values, scale in (
            ("features", generated_features, train_set.features, 1.0),
            ("pixels", pixel_vectors(generated_pixels), pixel_vectors(train_pixels), float(np.sqrt(pixel_count)))):
        statistics = memorization_statistics(generated_values, train_values, quantile=quantile, scale=scale)
        files = train_set.files if space == "features" else train_files
        statistics["closest_pairs"] = [[g, files[t], d] for g, t, d in statistics["closest_pairs"]]
        pairs[space] = statistics["closest_pairs"]
        for key in ("nearest_index", "nearest_distance"):
            statistics.pop(key)
        report[space] = statistics
    report["pixels"]["distance_unit"] = f"RMS pixel difference in [0, 1] at {pixel_size}x{pixel_size}"
    report["features"]["distance_unit"] = f"Euclidean distance in {extractor.name} features"
    return report, {"pairs": pairs, "generated": generated_images, "crop": train_crop}


def _pair_grid(pairs, generated_images, image_size, crop, path, space, workers):
    from cellgen.plots import save_image_grid

    train_images = read_files([train_file for _, train_file, _ in pairs], image_size, crop=crop, workers=workers)
    tiles = []
    for (generated_index, _, _), train_image in zip(pairs, train_images):
        tiles.extend([generated_images[generated_index], train_image])
    labels = [f"{distance:.3g}  {Path(train_file).name}" for _, train_file, distance in pairs]
    save_image_grid(np.stack(tiles), path, columns=2, row_labels=labels, scale=max(1, 96 // image_size),
                    title=f"{space}: generated | nearest training")


def markdown_report(result: dict[str, Any]) -> str:
    """The evaluation as Markdown: settings, mean +- std over seeds, per-seed values, memorisation."""
    settings = result["settings"]
    lines = ["# Generator evaluation", "",
             f"- real: `{result['real']['source']}` ({result['real']['images']} images"
             + (f", class {settings['class']}" if settings["class"] else "") + ")",
             f"- generated: `{result['generated']['source']}`",
             f"- extractor: {settings['extractor']['name']} ({settings['extractor']['feature_dim']} features, "
             f"{settings['extractor']['precision']})",
             f"- n = {settings['n_used']} per set and seed (requested {settings['n']}), {settings['seeds']} seed(s), "
             f"images compared at "
             f"{settings['image_size']} px, k = {settings['nearest_k']}", "",
             "| metric | mean | std |", "| --- | ---: | ---: |"]
    for name, values in result["summary"].items():
        lines.append(f"| {name} | {values['mean']:.4g} | {values['std']:.2g} |")
    lines += ["", "Standard deviation over seeds (N - 1).", "", "Per seed:", "",
              "| seed | n real | n generated | " + " | ".join(result["summary"]) + " |",
              "| " + " | ".join(["---:"] * (3 + len(result["summary"]))) + " |"]
    for row in result["per_seed"]:
        lines.append(f"| {row['seed']} | {row['n_real']} | {row['n_generated']} | "
                     + " | ".join(f"{row[name]:.4g}" for name in result["summary"]) + " |")
    memorization = result.get("memorization")
    if memorization:
        lines += ["", "## Memorisation check", "",
                  f"{memorization['generated_images']} generated images against {memorization['train_images']} "
                  f"training images (`{memorization['train']}`). Share below threshold: generated images "
                  "closer to a training image than the given quantile of training images are to their "
                  "nearest other training image; about equal to the quantile when nothing is copied.", "",
                  "| space | threshold | share below | expected | median ratio | min distance |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for space in ("features", "pixels"):
            part = memorization[space]
            lines.append(f"| {space} | {part['threshold']:.4g} | {part['share_below']:.3f} | "
                         f"{part['expected_share']:.3f} | {part['median_ratio']:.3f} | {part['min_distance']:.4g} |")
    if result["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result["notes"]]
    lines += ["", MARKDOWN_NOTES]
    return "\n".join(lines)


def write_report(result: dict[str, Any], out_dir, real_set: FeatureSet, generated_images: np.ndarray, crop=None,
                 memorization_images: dict | None = None, grid_count: int = 36, workers: int = 2) -> Path:
    """Writes ``metrics.json``, ``report.md``, ``real_vs_generated.png`` and the memorisation pair grids."""
    from cellgen.plots import save_image_grid, tile_images
    from cellgen.runs import environment_info, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image_size = result["settings"]["image_size"]
    write_json(out / "metrics.json", {**result, "environment": environment_info()})
    (out / "report.md").write_text(markdown_report(result), encoding="utf-8")
    count = min(grid_count, len(generated_images))
    if real_set.files and count and os.path.isfile(real_set.files[0]):
        rng = np.random.default_rng(0)
        chosen = np.sort(rng.choice(len(real_set.files), size=min(count, len(real_set.files)), replace=False))
        real_images = read_files([real_set.files[index] for index in chosen], image_size, crop=crop,
                                 workers=workers)
        columns = max(1, int(np.ceil(np.sqrt(count))))
        left = tile_images(real_images, columns)
        right = tile_images(generated_images[:count], columns)
        height = max(left.shape[0], right.shape[0])
        canvas = np.full((height, left.shape[1] + right.shape[1] + 12, 3), 255, np.uint8)
        canvas[:left.shape[0], :left.shape[1]] = left
        canvas[:right.shape[0], left.shape[1] + 12:] = right
        save_image_grid(canvas[None], out / "real_vs_generated.png", columns=1,
                        scale=max(1, 96 // image_size), title="left: real   |   right: generated")
    if memorization_images:
        for space, pairs in memorization_images["pairs"].items():
            if pairs:
                _pair_grid(pairs, memorization_images["generated"], image_size, memorization_images["crop"],
                           out / f"memorization_{space}.png", space, workers)
    return out
