#!/usr/bin/env python
"""Dense vs per-patch scene classification on real data: class agreement and held-out accuracy.

``classify_scene(method='dense')`` evaluates a patch model fully convolutionally, so a
patch sees its real neighbours where ``method='patch'`` pads each patch with zeros. This
script measures what that changes, on the real data of ``../shared/data``:

* **EuroSAT → Chiapas agreement**: a patch model (64×64, 13 bands, default widths) trained
  on the 269 EuroSAT patches classifies the Landsat 7 Chiapas scene through a band map
  (Sentinel-2 → nearest Landsat band); the fraction of pixels on which the two methods
  agree, at strides 32, 16 and 8.
* **EuroSAT mosaic accuracy**: the same kind of model trained on the source repository's
  ``train`` split (216 patches) classifies a mosaic of the 53 ``test`` patches (a 8-column
  grid of 64×64 tiles, 13 bands, real Sentinel-2 values; empty cells unlabelled); overall
  accuracy of both methods on the tiles' pixels and their agreement, at strides 32, 16, 8.
* **Chiapas held-out accuracy**: the labelled regions (connected components of each class
  in ``training_data.gtif``) are split alternately into train and test regions; patch
  models (7×7 at stride 1, 15×15 at stride 4) are trained on the train regions, the scene
  is classified with both methods, and the overall accuracy on the test regions' pixels
  (``validate_classification``) is reported for both, with their agreement. ``--seeds``
  training seeds.

    python benchmarks/accuracy_dense.py --out /tmp/geoml-bench/accuracy_dense.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SCENE = DATA / "landsat7_chiapas" / "LE70220491999322EDC01_stack.gtif"
LABELS = DATA / "landsat7_chiapas" / "training_data.gtif"
CHIAPAS = {1: "forest", 2: "water", 3: "herbaceous", 4: "barren", 5: "urban"}
# EuroSAT band order B01 B02 B03 B04 B05 B06 B07 B08 B09 B10 B11 B12 B8A -> Landsat 7 stack band
# (1 blue, 2 green, 3 red, 4 NIR, 5 SWIR1, 6 SWIR2): nearest in wavelength
S2_TO_L7 = [1, 1, 2, 3, 3, 4, 4, 4, 4, 5, 5, 6, 4]


def read(path):
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1), dict(src.profile)


def split_regions(work: Path):
    """Train/test label rasters: every other connected region of each class goes to test."""
    import rasterio
    from scipy import ndimage

    labels, profile = read(LABELS)
    train, test = np.zeros_like(labels), np.zeros_like(labels)
    for code in CHIAPAS:
        comp, n = ndimage.label(labels == code)
        for k in range(1, n + 1):
            (test if k % 2 == 0 else train)[comp == k] = code
        if n == 1:  # a class with a single region: split it by rows
            rows = np.flatnonzero((labels == code).any(1))
            half = rows[len(rows) // 2]
            m = labels == code
            test[m & (np.arange(labels.shape[0])[:, None] >= half)] = code
            train[m & (np.arange(labels.shape[0])[:, None] < half)] = code
    paths = {}
    for name, arr in (("train", train), ("test", test)):
        paths[name] = work / f"labels_{name}.tif"
        with rasterio.open(paths[name], "w", **profile) as dst:
            dst.write(arr, 1)
    return paths, {k: int((train == k).sum()) for k in CHIAPAS}, {k: int((test == k).sum()) for k in CHIAPAS}


def agreement(a, b) -> float:
    ra, rb = read(a)[0], read(b)[0]
    ok = (ra != 255) & (rb != 255)
    return float(np.mean(ra[ok] == rb[ok]))


def class_shares(path) -> dict:
    """Share of the scene's pixels per predicted code (shows whether an agreement is trivial)."""
    r = read(path)[0]
    codes, n = np.unique(r[r != 255], return_counts=True)
    return {int(c): round(float(k) / r.size, 4) for c, k in zip(codes, n)}


def eurosat_agreement(work: Path, epochs: int, seed: int) -> dict:
    from geoml_hub.classification import classify_scene
    from geoml_hub.models import load_model
    from geoml_hub.training import train_model

    t0 = time.perf_counter()
    res = train_model(DATA / "eurosat_ms", work / "eurosat.pt", epochs=epochs, seed=seed, device="cpu")
    model = load_model(res.model_path, device="cpu")
    out = {"train_seconds": time.perf_counter() - t0, "strides": {}}
    for stride in (32, 16, 8):
        times = {}
        for method in ("dense", "patch"):
            t = time.perf_counter()
            classify_scene(model, SCENE, work / f"eu_{method}_{stride}.tif", stride=stride, band_map=S2_TO_L7,
                           method=method, device="cpu")
            times[method] = time.perf_counter() - t
        out["strides"][stride] = {"agreement": agreement(work / f"eu_dense_{stride}.tif", work / f"eu_patch_{stride}.tif"),
                                  "seconds": times,
                                  "dense_class_shares": class_shares(work / f"eu_dense_{stride}.tif"),
                                  "patch_class_shares": class_shares(work / f"eu_patch_{stride}.tif")}
        print(f"  eurosat->chiapas stride {stride}: agreement {out['strides'][stride]['agreement']:.4f} {times} "
              f"{out['strides'][stride]['patch_class_shares']}",
              flush=True)
    return out


def eurosat_mosaic(work: Path, epochs: int, seed: int) -> dict:
    import csv

    import rasterio
    from rasterio.transform import from_origin

    from geoml_hub.classification import classify_scene
    from geoml_hub.models import load_model
    from geoml_hub.samples import open_tree
    from geoml_hub.training import train_model
    from geoml_hub.validation import validate_classification

    root = DATA / "eurosat_ms"
    with open(root / "MANIFEST.csv") as fh:
        rows = list(csv.DictReader(fh))
    split = {r["file"]: ("test" if "/test/" in r["source_path"] else "train") for r in rows}
    tree = open_tree(root)
    train_idx = [k for k, smp in enumerate(tree.samples) if split[f"{smp.class_name}/{Path(smp.file).name}"] == "train"]
    test_idx = [k for k in range(len(tree)) if k not in set(train_idx)]
    res = train_model(tree.subset(train_idx), work / "eurosat_train.pt", epochs=epochs, seed=seed, device="cpu")
    model = load_model(res.model_path, device="cpu")
    code = dict(zip(model.class_names, model.class_codes))
    cols = 8
    nrows = -(-len(test_idx) // cols)
    scene = np.zeros((13, nrows * 64, cols * 64), dtype=np.uint16)
    labels = np.zeros((nrows * 64, cols * 64), dtype=np.uint8)
    x = tree.subset(test_idx).read()
    for k, i in enumerate(test_idx):
        r, c = divmod(k, cols)
        scene[:, r * 64:(r + 1) * 64, c * 64:(c + 1) * 64] = x[k]
        labels[r * 64:(r + 1) * 64, c * 64:(c + 1) * 64] = code[tree.samples[i].class_name] + 1
    prof = {"driver": "GTiff", "width": cols * 64, "height": nrows * 64, "crs": "EPSG:32633",
            "transform": from_origin(500000, 6000000, 10, 10)}
    with rasterio.open(work / "mosaic.tif", "w", count=13, dtype="uint16", **prof) as dst:
        dst.write(scene)
    with rasterio.open(work / "mosaic_labels.tif", "w", count=1, dtype="uint8", nodata=0, **prof) as dst:
        dst.write(labels, 1)
    # the model's codes are 0..9; the label raster uses code + 1 (0 = unlabelled): shift the classification
    out = {"train": len(train_idx), "test": len(test_idx), "strides": {}}
    for stride in (32, 16, 8):
        row = {}
        for method in ("dense", "patch"):
            path = work / f"mosaic_{method}_{stride}.tif"
            t = time.perf_counter()
            classify_scene(model, work / "mosaic.tif", path, stride=stride, method=method, device="cpu")
            row[f"{method}_seconds"] = time.perf_counter() - t
            with rasterio.open(path) as src:
                cls = src.read(1)
                p2 = dict(src.profile)
            shifted = np.where(cls == 255, 255, cls + 1).astype(np.uint8)
            with rasterio.open(work / "shifted.tif", "w", **p2) as dst:
                dst.write(shifted, 1)
            row[f"{method}_accuracy"] = validate_classification(work / "shifted.tif", work / "mosaic_labels.tif",
                                                                class_names={})["overall_accuracy"]
        row["agreement"] = agreement(work / f"mosaic_dense_{stride}.tif", work / f"mosaic_patch_{stride}.tif")
        out["strides"][stride] = row
        print(f"  eurosat mosaic stride {stride}: {row}", flush=True)
    return out


def chiapas_accuracy(work: Path, labels: dict, patch: int, stride: int, widths, epochs: int, seed: int) -> dict:
    from geoml_hub.classification import classify_scene
    from geoml_hub.extraction import extract_samples
    from geoml_hub.models import load_model
    from geoml_hub.training import train_model
    from geoml_hub.validation import validate_classification

    tag = f"p{patch}_s{seed}"
    samples = work / f"samples_p{patch}"
    if not samples.exists():
        extract_samples(SCENE, labels["train"], samples, patch_size=patch, class_names=CHIAPAS)
    res = train_model(samples, work / f"{tag}.pt", epochs=epochs, widths=tuple(widths), seed=seed, device="cpu")
    model = load_model(res.model_path, device="cpu")
    out = {"patch": patch, "stride": stride, "widths": list(widths), "seed": seed}
    for method in ("dense", "patch"):
        path = work / f"ch_{tag}_{method}.tif"
        t = time.perf_counter()
        classify_scene(model, SCENE, path, stride=stride, method=method, device="cpu")
        out[f"{method}_seconds"] = time.perf_counter() - t
        summary = validate_classification(path, labels["test"])
        out[f"{method}_accuracy"] = summary["overall_accuracy"]
        out[f"{method}_kappa"] = summary.get("kappa")
    out["agreement"] = agreement(work / f"ch_{tag}_dense.tif", work / f"ch_{tag}_patch.tif")
    print(f"  chiapas {tag}: dense OA {out['dense_accuracy']:.4f}, patch OA {out['patch_accuracy']:.4f}, "
          f"agreement {out['agreement']:.4f}", flush=True)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "geoml-bench" / "accuracy_dense.json")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--eurosat-epochs", type=int, default=15)
    p.add_argument("--chiapas-epochs", type=int, default=30)
    p.add_argument("--skip-eurosat", action="store_true")
    p.add_argument("--only-mosaic", action="store_true", help="only the EuroSAT mosaic experiment")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    result = {}
    with tempfile.TemporaryDirectory(prefix="geoml-dense-acc-") as tmp:
        work = Path(tmp)
        if args.only_mosaic:
            result["eurosat_mosaic"] = eurosat_mosaic(work, args.eurosat_epochs, seeds[0])
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
            return result
        if not args.skip_eurosat:
            result["eurosat_to_chiapas"] = eurosat_agreement(work, args.eurosat_epochs, seeds[0])
            result["eurosat_mosaic"] = eurosat_mosaic(work, args.eurosat_epochs, seeds[0])
        labels, n_train, n_test = split_regions(work)
        result["chiapas_split"] = {"train_pixels": n_train, "test_pixels": n_test}
        result["chiapas"] = [chiapas_accuracy(work, labels, patch, stride, widths, args.chiapas_epochs, seed)
                             for patch, stride, widths in ((7, 1, (32, 64)), (15, 4, (32, 64)))
                             for seed in seeds]
    for key in ("dense_accuracy", "patch_accuracy", "agreement"):
        for patch in (7, 15):
            vals = [r[key] for r in result["chiapas"] if r["patch"] == patch]
            result.setdefault("chiapas_mean", {})[f"p{patch}_{key}"] = float(np.mean(vals))
    print(json.dumps(result.get("chiapas_mean"), indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  results: {args.out}")
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
