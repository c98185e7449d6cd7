"""End-to-end pipelines on the real data in ../shared/data (slow, but run by default)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from conftest import EUROSAT, EUROSAT_COUNTS, LABELS, SCENE_1999
from geoml_hub.models import load_model
from helpers import assert_png, read_csv_rows, read_json, read_raster, script

pytestmark = pytest.mark.slow


def check_qc(qc, classes):
    for key in ("overall_accuracy", "kappa", "ppv", "tpr", "f1", "n", "classes"):
        assert key in qc, key
    assert 0.0 <= qc["overall_accuracy"] <= 1.0
    assert -1.0 <= qc["kappa"] <= 1.0
    assert set(qc["classes"]) <= set(classes)
    for key in ("ppv", "tpr", "f1"):
        assert set(qc[key]) == set(qc["classes"])
        for v in qc[key].values():
            assert v is None or 0.0 <= v <= 1.0
    m = np.array(qc["confusion_matrix"]["matrix"])
    assert m.sum() == qc["n"]
    assert np.trace(m) / m.sum() == pytest.approx(qc["overall_accuracy"])


def check_selection(out, sel, candidates, n_samples):
    """The cross-validation table of a pipeline summary: every candidate, consistent figures, the
    CSV and the plot."""
    assert [r["model"] for r in sel["candidates"]] == candidates
    assert sel["n_samples"] == n_samples
    for row in sel["candidates"]:
        folds = row["fold_overall_accuracy"]
        assert len(folds) == sel["n_folds"] and all(0.0 <= v <= 1.0 for v in folds)
        assert row["mean_overall_accuracy"] == pytest.approx(np.mean(folds), abs=1e-3)
        assert row["std_overall_accuracy"] == pytest.approx(np.std(folds), abs=1e-3)
    best = max(r["mean_overall_accuracy"] for r in sel["candidates"])
    assert next(r for r in sel["candidates"] if r["model"] == sel["chosen"])["mean_overall_accuracy"] == best
    rows = read_csv_rows(out / "selection" / "cv.csv")
    assert len(rows) == len(candidates) * sel["n_folds"]
    for cand in candidates:  # every sample tested exactly once per candidate
        assert sum(int(r["n_test"]) for r in rows if r["model"] == cand) == n_samples
    assert_png(out / "selection" / "cv.png")


def test_patch_pipeline_eurosat(tmp_path, data_dir):
    out = tmp_path / "eurosat"
    proc = script("-q", "pipeline", EUROSAT, "--out", out, "--n-estimators", "50", check_rc=0)
    assert "QC on held-out data" in proc.stdout and "model selection" in proc.stdout
    for rel in ("split/train.csv", "split/test.csv", "balance/manifest.csv", "balance/summary.json",
                "model/model.pt", "model/model.history.csv", "qc/summary.json", "qc/report.html", "qc/report.csv",
                "qc/predictions.csv", "summary.json"):
        assert (out / rel).is_file(), rel
    for rel in ("balance/clusters.png", "model/model.curves.png", "qc/confusion_matrix.png"):
        assert_png(out / rel)
    s = read_json(out / "summary.json")
    n_test = sum(max(1, round(0.2 * n)) for n in EUROSAT_COUNTS.values())
    assert s["n_samples"] == 269 and s["n_test"] == n_test == 54 and s["n_train"] == 269 - n_test
    # the held-out split: disjoint from training, stratified
    train = read_csv_rows(out / "split" / "train.csv")
    test = read_csv_rows(out / "split" / "test.csv")
    assert {r["file"] for r in train}.isdisjoint({r["file"] for r in test})
    assert len({r["file"] for r in train} | {r["file"] for r in test}) == 269
    for name, n in EUROSAT_COUNTS.items():
        assert sum(r["class"] == name for r in test) == max(1, round(0.2 * n))
    # balancing ran on the training part only
    bal = read_json(out / "balance" / "summary.json")
    assert bal["total_before"] == s["n_train"]
    assert s["balance"]["ratio_after"] <= s["balance"]["ratio_before"]
    balanced = {r["file"] for r in read_csv_rows(out / "balance" / "manifest.csv")}
    assert balanced <= {r["file"] for r in train}
    # model selection: 5 stratified folds of the balanced selection, every candidate in the table
    sel = s["selection"]
    check_selection(out, sel, ["forest", "boosting", "ensemble"], len(balanced))
    assert sel["n_folds"] == 5 and "stratified" in sel["folds"]
    assert s["training"]["model"] == sel["chosen"]
    rows = read_csv_rows(out / "model" / "model.history.csv")
    assert len(rows) == s["training"]["epochs_run"] == 1  # a tree family: one fit
    model = load_model(out / "model" / "model.pt", device="cpu")
    assert model.class_names == sorted(EUROSAT_COUNTS) and model.class_codes == list(range(10))
    assert model.bands == list(range(1, 14)) and tuple(model.patch_size) == (64, 64)
    # QC on the held-out samples
    qc = s["qc"]
    check_qc(qc, EUROSAT_COUNTS)
    assert qc == read_json(out / "qc" / "summary.json")
    assert qc["n"] == n_test
    preds = read_csv_rows(out / "qc" / "predictions.csv")
    assert {(p["file"], p["index"]) for p in preds} == {(r["file"], r["index"]) for r in test}
    accuracy = np.mean([p["reference"] == p["predicted"] for p in preds])
    assert qc["overall_accuracy"] == pytest.approx(accuracy)
    assert qc["overall_accuracy"] > 0.1  # above chance for 10 classes


def test_scene_pipeline_chiapas(tmp_path, data_dir, chiapas_labels):
    out = tmp_path / "chiapas"
    proc = script("-q", "pipeline", "--scene", SCENE_1999, "--reference", LABELS, "--n-estimators", "50",
                  "--out", out, check_rc=0)
    assert "scene pipeline" in proc.stdout
    for rel in ("split/reference_train.tif", "split/reference_test.tif", "split/regions.csv",
                "samples/classes.json", "balance/manifest.csv", "balance/summary.json", "model/model.pt",
                "model/model.history.csv", "classification.tif", "qc/summary.json", "qc/report.html",
                "qc/report.csv", "summary.json"):
        assert (out / rel).is_file(), rel
    for rel in ("balance/clusters.png", "model/model.curves.png", "qc/confusion_matrix.png"):
        assert_png(out / rel)
    s = read_json(out / "summary.json")
    # spatial split: whole regions, disjoint, union = the labels
    train = read_raster(out / "split" / "reference_train.tif")[0][0]
    test = read_raster(out / "split" / "reference_test.tif")[0][0]
    assert not np.any((train != 0) & (test != 0))
    assert np.array_equal(np.where(train != 0, train, test), chiapas_labels)
    n_regions = sum(ndimage.label(chiapas_labels == c, structure=np.ones((3, 3)))[1] for c in range(1, 6))
    assert s["regions"]["train"] + s["regions"]["test"] == n_regions
    assert s["n_train_samples"] == int((train != 0).sum())
    assert s["classes_without_test_region"] == sorted(set(range(1, 6)) - set(np.unique(test[test != 0]).tolist()))
    assert s["balance"]["ratio_after"] <= s["balance"]["ratio_before"]
    # model selection: whole training regions per fold (each region is one sample container)
    sel = s["selection"]
    check_selection(out, sel, ["forest", "boosting", "ensemble"], s["balance"]["total_after"])
    assert "regions" in sel["folds"] and s["training"]["model"] == sel["chosen"]
    # the classification is on the scene's grid
    with rasterio.open(SCENE_1999) as scene, rasterio.open(out / "classification.tif") as cls_src:
        assert cls_src.dtypes[0] == "uint8" and cls_src.nodata == 255
        assert (cls_src.height, cls_src.width) == (scene.height, scene.width)
        assert cls_src.crs == scene.crs and cls_src.transform == scene.transform
        cls = cls_src.read(1)
    assert set(np.unique(cls).tolist()) <= {1, 2, 3, 4, 5}
    # QC on the test regions only, recomputed here from the rasters
    qc = s["qc"]
    check_qc(qc, [str(c) for c in range(1, 6)])
    assert qc == read_json(out / "qc" / "summary.json")
    mask = test != 0
    assert qc["labelled"] == int(mask.sum()) and qc["unclassified"] == 0 and qc["n"] == int(mask.sum())
    assert qc["overall_accuracy"] == pytest.approx(float(np.mean(cls[mask] == test[mask])))
    majority = np.bincount(test[mask]).max() / mask.sum()
    assert qc["overall_accuracy"] > majority  # better than always answering the commonest test class
