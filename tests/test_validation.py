"""PyCM quality control: validate, evaluate, compare."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import rasterio
from pycm import ConfusionMatrix
from rasterio.crs import CRS
from rasterio.transform import from_origin

from geoml_hub.errors import DataError, GridMismatchError, ParameterError
from geoml_hub.validation import compare_classifications, evaluate_model, validate_classification
from helpers import assert_png, csv_header, read_csv_rows, read_json, write_raster

SHAPE = (30, 40)
SUMMARY_KEYS = {"overall_accuracy", "kappa", "ppv", "tpr", "f1", "n", "classes"}


def num(v):
    """PyCM reports undefined statistics as the string 'None'."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(f) or np.isinf(f) else f


def assert_matches_pycm(summary, actual, predicted, name_of=str):
    """Compare a summary with PyCM built from the pixel vectors."""
    cm = ConfusionMatrix(actual_vector=[int(v) for v in actual], predict_vector=[int(v) for v in predicted])
    assert summary["n"] == len(actual)
    assert summary["overall_accuracy"] == pytest.approx(num(cm.Overall_ACC), abs=1e-12)
    assert summary["kappa"] == pytest.approx(num(cm.Kappa), abs=1e-12)
    assert sorted(summary["classes"]) == sorted(name_of(c) for c in cm.classes)
    for c in cm.classes:
        n = name_of(c)
        for key, stat in (("ppv", cm.PPV), ("tpr", cm.TPR), ("f1", cm.F1)):
            expected = num(stat[c])
            if expected is None:
                assert summary[key][n] is None, (key, n)
            else:
                assert summary[key][n] == pytest.approx(expected, abs=1e-12), (key, n)


def random_pair(seed, n_classes=4, labelled=0.6, agree=0.7, extra_predicted=None):
    rng = np.random.default_rng(seed)
    ref = rng.integers(1, n_classes + 1, SHAPE)
    ref[rng.random(SHAPE) > labelled] = 0
    cls = np.where(rng.random(SHAPE) < agree, ref, rng.integers(1, n_classes + 1, SHAPE))
    cls[ref == 0] = rng.integers(1, n_classes + 1, int((ref == 0).sum()))
    if extra_predicted is not None:
        cls[rng.random(SHAPE) < 0.05] = extra_predicted  # a class the reference does not have
    return ref.astype(np.uint8), cls.astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_statistics_equal_pycm(tmp_path, seed):
    ref, cls = random_pair(seed, extra_predicted=9 if seed == 2 else None)
    r = write_raster(tmp_path / "ref.tif", ref, nodata=0)
    c = write_raster(tmp_path / "cls.tif", cls, nodata=255)
    summary = validate_classification(c, r)
    mask = ref != 0
    assert summary["labelled"] == int(mask.sum())
    assert summary["unclassified"] == 0
    assert_matches_pycm(summary, ref[mask], cls[mask])
    # the matrix: rows = reference, columns = predicted
    m = np.array(summary["confusion_matrix"]["matrix"])
    codes = [summary["codes"][n] for n in summary["classes"]]
    for i, a in enumerate(codes):
        for j, b in enumerate(codes):
            assert m[i, j] == int(((ref == a) & (cls == b) & mask).sum())


def test_float_reference_with_nodata(tmp_path):
    ref, cls = random_pair(5, n_classes=3)
    fref = np.where(ref == 0, -99999.0, ref.astype(np.float32)).astype(np.float32)
    r = write_raster(tmp_path / "ref.tif", fref, nodata=-99999.0)
    c = write_raster(tmp_path / "cls.tif", cls, nodata=255)
    summary = validate_classification(c, r, reference_nodata=-99999)
    mask = ref != 0
    assert summary["labelled"] == int(mask.sum())
    assert_matches_pycm(summary, ref[mask], cls[mask])
    # None: the file's own nodata value is the unlabelled value
    again = validate_classification(c, r, reference_nodata=None)
    assert again["overall_accuracy"] == summary["overall_accuracy"] and again["n"] == summary["n"]
    # a float reference with non-integer labels is refused
    bad = fref.copy()
    bad[np.nonzero(mask)[0][0], np.nonzero(mask)[1][0]] = 1.5
    b = write_raster(tmp_path / "bad.tif", bad, nodata=-99999.0)
    with pytest.raises(DataError, match="whole numbers"):
        validate_classification(c, b, reference_nodata=-99999)


def test_only_labelled_pixels_count(tmp_path):
    ref, cls = random_pair(6)
    r = write_raster(tmp_path / "ref.tif", ref, nodata=0)
    a = validate_classification(write_raster(tmp_path / "a.tif", cls, nodata=255), r)
    other = cls.copy()
    other[ref == 0] = 1  # change only unlabelled pixels
    b = validate_classification(write_raster(tmp_path / "b.tif", other, nodata=255), r)
    for key in ("overall_accuracy", "kappa", "ppv", "tpr", "f1", "n", "classes", "confusion_matrix"):
        assert a[key] == b[key]
    assert a["n"] == int((ref != 0).sum())


def test_classification_nodata_is_unclassified(tmp_path):
    ref, cls = random_pair(7)
    rng = np.random.default_rng(0)
    holes = rng.random(SHAPE) < 0.1
    cls = cls.copy()
    cls[holes] = 255
    r = write_raster(tmp_path / "ref.tif", ref, nodata=0)
    c = write_raster(tmp_path / "cls.tif", cls, nodata=255)
    summary = validate_classification(c, r)
    mask = ref != 0
    assert summary["labelled"] == int(mask.sum())
    assert summary["unclassified"] == int((mask & holes).sum()) > 0
    assert summary["n"] == summary["labelled"] - summary["unclassified"]
    keep = mask & ~holes
    assert_matches_pycm(summary, ref[keep], cls[keep])
    assert "255" not in summary["classes"]


def test_output_files(tmp_path):
    ref, cls = random_pair(8)
    r = write_raster(tmp_path / "ref.tif", ref, nodata=0)
    c = write_raster(tmp_path / "cls.tif", cls, nodata=255)
    with rasterio.open(c, "r+") as dst:
        dst.update_tags(CLASS_NAMES=json.dumps({"1": "forest", "2": "water", "3": "herbaceous", "4": "barren"}))
    out = tmp_path / "qc"
    summary = validate_classification(c, r, out)
    saved = read_json(out / "summary.json")
    assert SUMMARY_KEYS <= set(saved)
    assert saved == json.loads(json.dumps(summary))
    assert saved["classes"] == ["forest", "water", "herbaceous", "barren"]
    assert saved["codes"] == {"forest": 1, "water": 2, "herbaceous": 3, "barren": 4}
    mask = ref != 0
    names = {1: "forest", 2: "water", 3: "herbaceous", 4: "barren"}
    assert_matches_pycm(saved, ref[mask], cls[mask], name_of=lambda c_: names[c_])
    html = (out / "report.html").read_text(encoding="utf-8", errors="replace")
    assert "<html" in html.lower() and "forest" in html
    assert (out / "report.csv").stat().st_size > 0
    assert "forest" in (out / "report.csv").read_text()
    assert (out / "report_matrix.csv").is_file()
    assert_png(out / "confusion_matrix.png")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    # explicit names override the tag
    other = validate_classification(c, r, class_names={1: "a", 2: "b", 3: "c", 4: "d"})
    assert other["classes"] == ["a", "b", "c", "d"]
    assert other["overall_accuracy"] == summary["overall_accuracy"]


def _grid_variant(tmp_path, name, data, **kw):
    return write_raster(tmp_path / name, data, nodata=kw.pop("nodata", None), **kw)


@pytest.mark.parametrize("variant, what", [
    ({"shape": (30, 39)}, "shape"),
    ({"shape": (29, 40)}, "shape"),
    ({"transform": from_origin(462435.0, 1741815.0, 30.0, 30.0)}, "transform"),
    ({"transform": from_origin(462405.0, 1741815.0, 20.0, 20.0)}, "transform"),
    ({"crs": "EPSG:32616"}, "CRS"),
    ({"crs": "EPSG:4326"}, "CRS"),
])
def test_grid_mismatch(tmp_path, variant, what):
    ref, cls = random_pair(9)
    r = write_raster(tmp_path / "ref.tif", ref, nodata=0)
    shape = variant.pop("shape", SHAPE)
    c = write_raster(tmp_path / "cls.tif", cls[:shape[0], :shape[1]], nodata=255, **variant)
    with pytest.raises(GridMismatchError) as info:
        validate_classification(c, r, tmp_path / "qc")
    msg = str(info.value)
    assert what in msg
    others = {"shape", "transform", "CRS"} - {what}
    assert not any(f"differ in {o}" in msg for o in others)
    assert "cls.tif" in msg and "ref.tif" in msg
    assert not (tmp_path / "qc" / "summary.json").exists()


def _renamed_crs_raster(path, data):
    """A GeoTIFF whose CRS is EPSG:32615 under another name and without an EPSG code (via a PAM side-car)."""
    write_raster(path, data, crs=None, nodata=0)
    wkt = CRS.from_epsg(32615).to_wkt().replace("WGS 84 / UTM zone 15N", "Chiapas UTM fifteen north")
    wkt = re.sub(r',AUTHORITY\["EPSG","32615"\]\]$', "]", wkt)
    (path.parent / (path.name + ".aux.xml")).write_text(f"<PAMDataset><SRS>{wkt}</SRS></PAMDataset>")
    return path


def test_ignore_crs_name(tmp_path):
    ref, cls = random_pair(10)
    c = write_raster(tmp_path / "cls.tif", cls, nodata=255, crs="EPSG:32615")
    r = _renamed_crs_raster(tmp_path / "ref.tif", ref)
    with rasterio.open(r) as src:
        assert "Chiapas UTM fifteen north" in src.crs.to_wkt()  # the file really carries the other name
    summary = validate_classification(c, r, ignore_crs_name=True)
    mask = ref != 0
    assert_matches_pycm(summary, ref[mask], cls[mask])
    # the same projection as a PROJ definition GDAL's IsSame refuses: only the override accepts it
    towgs84 = "+proj=utm +zone=15 +ellps=WGS84 +towgs84=0,0,0,0,0,0,0 +units=m +no_defs"
    r1 = write_raster(tmp_path / "ref1.tif", ref, nodata=0, crs=towgs84)
    with rasterio.open(r1) as src:
        assert src.crs != CRS.from_epsg(32615)  # the file really differs by rasterio's comparison
    with pytest.raises(GridMismatchError, match="CRS"):
        validate_classification(c, r1)
    assert_matches_pycm(validate_classification(c, r1, ignore_crs_name=True), ref[mask], cls[mask])
    # a really different CRS is still refused
    r2 = write_raster(tmp_path / "ref2.tif", ref, nodata=0, crs="EPSG:32616")
    with pytest.raises(GridMismatchError, match="CRS"):
        validate_classification(c, r2, ignore_crs_name=True)


def test_no_labelled_pixel(tmp_path):
    ref = np.zeros(SHAPE, np.uint8)
    r = write_raster(tmp_path / "ref.tif", ref, nodata=0)
    c = write_raster(tmp_path / "cls.tif", np.ones(SHAPE, np.uint8), nodata=255)
    with pytest.raises(DataError, match="no labelled pixel"):
        validate_classification(c, r)


def test_missing_files(tmp_path):
    ref, cls = random_pair(11)
    r = write_raster(tmp_path / "ref.tif", ref, nodata=0)
    with pytest.raises(DataError, match="absent.tif"):
        validate_classification(tmp_path / "absent.tif", r)


# ---------------------------------------------------------------------------
# evaluate_model


def test_evaluate_model(tmp_path, patch_model, patch_tree):
    out = tmp_path / "qc"
    summary = evaluate_model(patch_model.model_path, patch_tree, out, device="cpu")
    saved = read_json(out / "summary.json")
    assert SUMMARY_KEYS <= set(saved)
    assert saved == json.loads(json.dumps(summary))
    rows = read_csv_rows(out / "predictions.csv")
    assert len(rows) == 48 == saved["n"]
    codes = {"bare": 3, "crop": 7, "wood": 11}
    assert saved["codes"] == {n: codes[n] for n in saved["classes"]}
    names = {v: k for k, v in codes.items()}
    actual = [codes[r["reference"]] for r in rows]
    predicted = [codes[r["predicted"]] for r in rows]
    assert_matches_pycm(saved, actual, predicted, name_of=lambda c: names[c])
    for f in ("report.html", "report.csv", "report_matrix.csv"):
        assert (out / f).is_file()
    assert_png(out / "confusion_matrix.png")
    # the same keys as validate_classification's summary
    ref, cls = random_pair(12)
    v = validate_classification(write_raster(tmp_path / "c.tif", cls, nodata=255),
                                write_raster(tmp_path / "r.tif", ref, nodata=0))
    common = {"overall_accuracy", "kappa", "ppv", "tpr", "f1", "n", "classes", "codes", "reference_counts",
              "predicted_counts", "confusion_matrix", "macro_ppv"}
    assert common <= set(v) and common <= set(saved)


# ---------------------------------------------------------------------------
# compare_classifications


def _with_errors(ref, fraction, seed, n_classes=4):
    rng = np.random.default_rng(seed)
    out = ref.copy()
    wrong = (rng.random(ref.shape) < fraction) & (ref != 0)
    out[wrong] = (ref[wrong] % n_classes) + 1  # always a different class
    out[ref == 0] = 1
    return out


def test_compare_names_the_better_version(tmp_path):
    ref, _ = random_pair(13)
    r = write_raster(tmp_path / "ref.tif", ref, nodata=0)
    good = write_raster(tmp_path / "good.tif", _with_errors(ref, 0.1, 1), nodata=255)
    poor = write_raster(tmp_path / "poor.tif", _with_errors(ref, 0.4, 2), nodata=255)
    out = tmp_path / "cmp"
    s = compare_classifications(poor, good, r, out, names=("v1", "v2"))
    assert s["better"] == "v2"
    assert compare_classifications(good, poor, r, names=("v1", "v2"))["better"] == "v1"
    v1 = read_json(out / "v1" / "summary.json")
    v2 = read_json(out / "v2" / "summary.json")
    assert v2["overall_accuracy"] > v1["overall_accuracy"]
    assert csv_header(out / "comparison.csv") == ["statistic", "v1", "v2"]
    rows = {row["statistic"]: row for row in read_csv_rows(out / "comparison.csv")}
    for stat in ("overall_accuracy", "kappa", "macro_ppv"):
        assert float(rows[stat]["v1"]) == pytest.approx(v1[stat])
        assert float(rows[stat]["v2"]) == pytest.approx(v2[stat])
    for c in v1["classes"]:
        assert float(rows[f"ppv:{c}"]["v1"]) == pytest.approx(v1["ppv"][c])
        assert float(rows[f"tpr:{c}"]["v2"]) == pytest.approx(v2["tpr"][c])
    saved = read_json(out / "summary.json")
    assert saved["better"] == "v2" and saved["names"] == ["v1", "v2"]
    assert saved["pycm_best"] in ("v2", None)
    mask = ref != 0
    assert_matches_pycm(v2, ref[mask], _with_errors(ref, 0.1, 1)[mask])


def test_compare_tie_and_bad_names(tmp_path):
    ref, cls = random_pair(14)
    r = write_raster(tmp_path / "ref.tif", ref, nodata=0)
    c = write_raster(tmp_path / "cls.tif", cls, nodata=255)
    assert compare_classifications(c, c, r)["better"] is None
    with pytest.raises(ParameterError):
        compare_classifications(c, c, r, names=("same", "same"))


def test_evaluate_class_unknown_to_the_model(tmp_path):
    """Samples of a class the model never saw count as errors and are listed after the model's classes."""
    from geoml_hub.training import train_model
    from helpers import write_npy_tree

    rng = np.random.default_rng(0)
    known = {"a": [rng.normal(0, 1, (30, 3, 1, 1)).astype(np.float32)],
             "b": [rng.normal(5, 1, (30, 3, 1, 1)).astype(np.float32)]}
    model = train_model(write_npy_tree(tmp_path / "train", known), tmp_path / "m.pt", model="cnn", epochs=3,
                        widths=(4,), device="cpu").model_path
    extra = dict(known, zz=[rng.normal(9, 1, (5, 3, 1, 1)).astype(np.float32)])
    s = evaluate_model(model, write_npy_tree(tmp_path / "eval", extra), tmp_path / "qc")
    assert s["classes"] == ["a", "b", "zz"]
    assert s["codes"] == {"a": 0, "b": 1, "zz": "zz"}
    assert s["n"] == 65 and s["reference_counts"]["zz"] == 5
    assert s["tpr"]["zz"] == 0.0  # never predicted: the model has no such output


def test_multi_band_classification_is_refused(tmp_path):
    """An 8-band scene given as the classification would be read as band 1 (hundreds of 'classes')."""
    from conftest import LABELS, SCENE_1999

    with pytest.raises(DataError, match="has 8 bands; a single-band raster"):
        validate_classification(SCENE_1999, LABELS, tmp_path / "qc")
    assert not (tmp_path / "qc").exists()
