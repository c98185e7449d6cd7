"""The spectral compatibility check and the confidence raster, on the real data.

The verdicts of the issue: a model trained on the EuroSAT (Sentinel-2) patches is not fit for
the Chiapas Landsat scene, even with a band map; it is fit for the EuroSAT tree; a model trained
on the Chiapas scene is fit for that scene.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from conftest import EUROSAT, LABELS, SCENE_1999, SCENE_2002
from geoml_hub.classification import CONFIDENCE_NODATA, NODATA, classify_scene
from geoml_hub.compatibility import check_compatibility, model_statistics, quick_check
from geoml_hub.errors import ModelError, ParameterError
from geoml_hub.models import load_model
from geoml_hub.validation import validate_classification
from helpers import assert_png, read_json, run_main, write_raster

#: Sentinel-2 bands B02, B03, B04, B08, B11, B12 (blue, green, red, NIR, SWIR 1, SWIR 2) ...
EUROSAT_BANDS = (2, 3, 4, 8, 11, 12)
#: ... and the Landsat 7 stack bands with the same roles.
LANDSAT_MAP = (1, 2, 3, 4, 5, 6)


@pytest.fixture(scope="module")
def eurosat_model(tmp_path_factory, data_dir):
    """A small EuroSAT patch model on the six bands Landsat 7 also has (a TrainResult)."""
    from geoml_hub.training import train_model

    out = tmp_path_factory.mktemp("eurosat6") / "eurosat6.pt"
    return train_model(EUROSAT, out, model="cnn", epochs=2, widths=(8,), bands=EUROSAT_BANDS, seed=0, device="cpu")


@pytest.fixture(scope="module")
def eurosat_forest(tmp_path_factory, data_dir):
    """The default family (a random forest) on the same six EuroSAT bands."""
    from geoml_hub.training import TrainConfig, train_model

    assert TrainConfig().model == "forest"
    out = tmp_path_factory.mktemp("eurosat6f") / "eurosat6f.pt"
    return train_model(EUROSAT, out, n_estimators=20, bands=EUROSAT_BANDS, seed=0)


def test_the_training_statistics_are_stored_in_the_model(pixel_model, eurosat_model):
    for res, n_bands in ((pixel_model, 8), (eurosat_model, 6)):
        model = load_model(res.model_path, device="cpu")
        spec = model.meta["spectral"]
        assert np.asarray(spec["quantiles"]).shape == (n_bands, 101)
        q = np.asarray(spec["quantiles"])
        assert np.all(np.diff(q, axis=1) >= 0)  # percentiles ascend
        assert np.allclose(q[:, 0], spec["min"]) and np.allclose(q[:, -1], spec["max"])
        assert model_statistics(model)["source"] == "spectral"
    model = load_model(pixel_model.model_path, device="cpu")
    if not model.meta["architecture"]["log_input"]:  # the network's normalisation saw the same samples
        assert np.allclose(model.meta["spectral"]["mean"], model.meta["normalization"]["mean"], rtol=1e-4)


def test_the_three_verdicts(eurosat_model, pixel_model, chiapas_samples, tmp_path):
    s = check_compatibility(eurosat_model.model_path, SCENE_1999, tmp_path / "eu_landsat", band_map=LANDSAT_MAP,
                            device="cpu")
    assert s["compatible"] is False and s["reason"].startswith("not compatible: band 2:")
    blue = s["bands"][0]
    assert blue["band"] == 2 and blue["scene_band"] == 1 and blue["outside"] > 0.5 and "outside" in blue["failed"]
    assert s["kind"] == "scene" and s["pixels"] == 250 * 250
    written = read_json(tmp_path / "eu_landsat" / "summary.json")
    assert written["compatible"] is False and written["reason"] == s["reason"]
    assert_png(tmp_path / "eu_landsat" / "compatibility.png")

    s = check_compatibility(eurosat_model.model_path, EUROSAT, tmp_path / "eu_tree", device="cpu")
    assert s["compatible"] is True and s["kind"] == "samples", s["reason"]
    assert all(abs(b["mean_shift"]) < 0.5 and b["outside"] < 0.05 for b in s["bands"])

    s = check_compatibility(pixel_model.model_path, SCENE_1999, tmp_path / "chiapas", device="cpu")
    assert s["compatible"] is True, s["reason"]
    assert s["classified_samples"] > 0 and 0 <= s["low_confidence_share"] <= 1
    # the same model on its training samples, and on the 2002 scene (clouds, saturated pixels)
    assert check_compatibility(pixel_model.model_path, chiapas_samples.root, device="cpu")["compatible"] is True
    s = check_compatibility(pixel_model.model_path, SCENE_2002, device="cpu")
    assert s["compatible"] is False and s["reason"].startswith("not compatible")


def test_the_default_family_gets_the_same_verdicts(eurosat_forest, tmp_path):
    model = load_model(eurosat_forest.model_path, device="cpu")
    assert model.meta["family"] == "forest" and model_statistics(model)["source"] == "spectral"
    s = check_compatibility(eurosat_forest.model_path, SCENE_1999, tmp_path / "f", band_map=LANDSAT_MAP)
    assert s["compatible"] is False and s["reason"].startswith("not compatible: band 2:"), s["reason"]
    s = check_compatibility(eurosat_forest.model_path, EUROSAT, tmp_path / "t")
    assert s["compatible"] is True, s["reason"]


def test_model_files_without_the_statistics_fall_back_on_the_normalisation(eurosat_model, pixel_model, tmp_path):
    import torch

    stripped = {}
    for name, res in (("eu", eurosat_model), ("pixel", pixel_model)):
        payload = torch.load(res.model_path, map_location="cpu", weights_only=True)
        del payload["spectral"]
        stripped[name] = tmp_path / f"{name}.pt"
        torch.save(payload, stripped[name])
    full = check_compatibility(eurosat_model.model_path, SCENE_1999, band_map=LANDSAT_MAP, device="cpu")
    s = check_compatibility(stripped["eu"], SCENE_1999, band_map=LANDSAT_MAP, device="cpu")
    # the same mean shifts; without the percentiles the range is mean +- 2.576 std, too wide for the skewed
    # EuroSAT blue band, so the verdict is weaker, and says so
    assert s["statistics"] == "normalization" and "the check is weaker" in s["reason"]
    assert [b["mean_shift"] for b in s["bands"]] == pytest.approx([b["mean_shift"] for b in full["bands"]], rel=1e-4)
    assert all(b["distance"] is None for b in s["bands"])
    s = check_compatibility(stripped["pixel"], SCENE_1999, tmp_path / "fig", device="cpu")
    assert s["statistics"] == "normalization" and s["compatible"] is True, s["reason"]
    assert_png(tmp_path / "fig" / "compatibility.png")


def test_bad_input_is_refused(eurosat_model, pixel_model, tmp_path):
    with pytest.raises(ModelError, match="scene has 8 bands but the model was trained on 13-band samples"):
        check_compatibility(eurosat_model.model_path, SCENE_1999, device="cpu")
    with pytest.raises(ParameterError, match="band_map applies to scenes"):
        check_compatibility(eurosat_model.model_path, EUROSAT, band_map=(1, 2, 3, 4, 5, 6), device="cpu")
    with pytest.raises(ParameterError, match="max_outside"):
        check_compatibility(pixel_model.model_path, SCENE_1999, max_outside=1.5, device="cpu")
    # a scene that is nodata everywhere: nothing to compare; the check before a classification says so
    with rasterio.open(SCENE_1999) as src:
        profile = src.profile
    empty = write_raster(tmp_path / "empty.tif", np.full((8, 20, 30), -9999, dtype=np.int16),
                         crs=profile["crs"], nodata=-9999)
    checked = quick_check(pixel_model.model_path, empty, device="cpu")
    assert checked["compatible"] is None and checked["reason"].startswith("not checked")


@pytest.fixture(scope="module")
def holed_scene(tmp_path_factory, data_dir):
    """The 1999 scene with a nodata block (rows 0-39, columns 0-59) and one nodata pixel."""
    with rasterio.open(SCENE_1999) as src:
        data, profile = src.read(), src.profile
    data[:, :40, :60] = -9999
    data[3, 100, 100] = -9999
    return write_raster(tmp_path_factory.mktemp("holed") / "holed.tif", data, crs=profile["crs"],
                        transform=profile["transform"], nodata=-9999)


@pytest.mark.parametrize("method", ["dense", "patch"])
def test_confidence_raster_of_a_pixel_model(pixel_model, holed_scene, method, tmp_path):
    plain = classify_scene(pixel_model.model_path, holed_scene, tmp_path / "plain.tif", method=method, device="cpu",
                           compatibility_check=False)
    assert plain.confidence is None and plain.compatibility is None
    res = classify_scene(pixel_model.model_path, holed_scene, tmp_path / "c.tif", method=method, device="cpu",
                         confidence=tmp_path / "conf.tif")
    assert res.confidence == tmp_path / "conf.tif" and res.compatibility["compatible"] is True
    with rasterio.open(tmp_path / "conf.tif") as conf, rasterio.open(tmp_path / "c.tif") as cls, \
            rasterio.open(tmp_path / "plain.tif") as plain_src, rasterio.open(holed_scene) as src:
        c, k = conf.read(1), cls.read(1)
        assert conf.dtypes[0] == "float32" and conf.nodata == CONFIDENCE_NODATA == -1
        assert conf.transform == src.transform and conf.crs == src.crs and conf.shape == src.shape
        assert np.array_equal(k, plain_src.read(1))  # asking for the confidence does not change the classes
        nodata = k == NODATA
        assert nodata.sum() == 40 * 60 + 1 == res.nodata_pixels
        assert np.all(c[nodata] == -1)
        assert c[~nodata].min() >= 1.0 / 5 - 1e-6 and c[~nodata].max() <= 1.0  # 5 classes: at least 1/5


def test_confidence_is_higher_where_the_classification_is_right(pixel_model, tmp_path):
    """On the labelled pixels of training_data.gtif; and the QC report's confidence bins."""
    res = classify_scene(pixel_model.model_path, SCENE_1999, tmp_path / "c.tif", device="cpu",
                         confidence=tmp_path / "conf.tif")
    with rasterio.open(tmp_path / "conf.tif") as conf, rasterio.open(tmp_path / "c.tif") as cls, \
            rasterio.open(LABELS) as ref_src:
        c, k, ref = conf.read(1), cls.read(1), ref_src.read(1)
    labelled = ref > 0
    right = k[labelled] == ref[labelled]
    assert 0 < right.sum() < right.size and res.nodata_pixels == 0
    assert c[labelled][right].mean() > c[labelled][~right].mean()

    s = validate_classification(tmp_path / "c.tif", LABELS, tmp_path / "qc", confidence=tmp_path / "conf.tif")
    bins = s["confidence_bins"]
    assert len(bins["bins"]) == 10 and sum(b["n"] for b in bins["bins"]) == bins["n"] == s["n"] == 718
    assert sum(b["correct"] for b in bins["bins"]) == round(s["overall_accuracy"] * 718)
    assert bins["mean_confidence_correct"] > bins["mean_confidence_wrong"]
    assert bins["mean_confidence_correct"] == pytest.approx(c[labelled][right].mean(), rel=1e-5)
    assert 0 <= bins["ece"] <= 1
    assert read_json(tmp_path / "qc" / "summary.json")["confidence_bins"]["n"] == 718
    assert_png(tmp_path / "qc" / "reliability.png")


@pytest.mark.parametrize("method", ["dense", "patch"])
def test_confidence_raster_of_a_patch_model(patch_model, patch_scene, method, tmp_path):
    res = classify_scene(patch_model.model_path, patch_scene, tmp_path / "c.tif", method=method, stride=2,
                         device="cpu", confidence=tmp_path / "conf.tif")
    with rasterio.open(tmp_path / "conf.tif") as conf, rasterio.open(tmp_path / "c.tif") as cls:
        c, k = conf.read(1), cls.read(1)
    assert c.shape == k.shape == (45, 53) and res.nodata_pixels == 0
    assert c.min() >= 1.0 / 3 - 1e-6 and c.max() <= 1.0
    # blocks of 2x2 pixels share their patch's probability
    assert np.array_equal(c[0:2, 0:2], np.full((2, 2), c[0, 0]))


def test_cli_compatibility_and_classify_warning(eurosat_model, pixel_model, tmp_path, capsys):
    rc, out, err = run_main(["-q", "compatibility", eurosat_model.model_path, SCENE_1999, "--band-map", "1,2,3,4,5,6",
                             "--out", tmp_path / "compat", "--device", "cpu"], capsys)
    assert rc == 0, err
    assert out.startswith("not compatible: band 2:")
    assert read_json(tmp_path / "compat" / "summary.json")["compatible"] is False
    assert_png(tmp_path / "compat" / "compatibility.png")
    # classify warns in one line on stderr, and classifies anyway
    rc, out, err = run_main(["-q", "classify", eurosat_model.model_path, SCENE_1999, "--band-map", "1,2,3,4,5,6",
                             "--out", tmp_path / "c.tif", "--device", "cpu", "--confidence", tmp_path / "conf.tif"],
                            capsys)
    assert rc == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoml-hub: warning: the model may not fit this scene")
    assert (tmp_path / "c.tif").is_file() and (tmp_path / "conf.tif").is_file()
    rc, out, err = run_main(["-q", "classify", eurosat_model.model_path, SCENE_1999, "--band-map", "1,2,3,4,5,6",
                             "--out", tmp_path / "c2.tif", "--device", "cpu", "--no-compatibility-check"], capsys)
    assert rc == 0 and err == ""
    rc, out, err = run_main(["-q", "classify", pixel_model.model_path, SCENE_1999, "--out", tmp_path / "c3.tif",
                             "--device", "cpu"], capsys)
    assert rc == 0 and err == ""  # compatible: no warning
    rc, out, err = run_main(["-q", "validate", tmp_path / "c.tif", LABELS, "--out", tmp_path / "qc",
                             "--confidence", tmp_path / "conf.tif"], capsys)
    assert rc == 0, err
    assert_png(tmp_path / "qc" / "reliability.png")


def test_cli_errors_are_one_line_and_leave_out_as_it_was(eurosat_model, pixel_model, tmp_path, capsys):
    cases = [
        (["compatibility", eurosat_model.model_path, SCENE_1999, "--out", tmp_path / "a", "--device", "cpu"],
         "scene has 8 bands but the model was trained on 13-band samples"),
        (["compatibility", eurosat_model.model_path, tmp_path / "missing.tif", "--out", tmp_path / "a"],
         "missing.tif: scene or training-sample tree not found"),
        (["compatibility", pixel_model.model_path, SCENE_1999, "--out", tmp_path / "a", "--max-outside", "2"],
         "--max-outside must be 0.0 to 1.0"),
        (["classify", pixel_model.model_path, SCENE_1999, "--out", tmp_path / "c.tif", "--confidence",
          tmp_path / "c.tif"], "--confidence must name another file than --out"),
        (["classify", pixel_model.model_path, SCENE_1999, "--out", tmp_path / "c.tif", "--confidence", tmp_path],
         f"--confidence {tmp_path}: is a directory"),
    ]
    for argv, text in cases:
        rc, out, err = run_main(["-q", *argv], capsys)
        assert rc == 2 and "Traceback" not in err, err
        assert err.startswith("geoml-hub: error: ") and text in err and len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir())


def test_training_statistics_are_those_of_the_chosen_samples_read_in_chunks():
    from geoml_hub.compatibility import training_statistics

    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 300.0, (300, 3, 4, 4)).astype(np.float32)
    used = np.sort(rng.choice(300, 250, replace=False))
    s = training_statistics(x, index=used, chunk=64)
    chosen = x[used].astype(np.float64)
    assert s["pixels"] == 250 * 16
    assert np.allclose(s["mean"], chosen.mean(axis=(0, 2, 3))) and np.allclose(s["std"], chosen.std(axis=(0, 2, 3)))
    assert s["min"] == chosen.min(axis=(0, 2, 3)).tolist() and s["max"] == chosen.max(axis=(0, 2, 3)).tolist()
    q = np.asarray(s["quantiles"])  # all 4,000 pixels are below the sample cap: exact percentiles
    assert np.allclose(q, np.quantile(np.moveaxis(chosen, 1, 0).reshape(3, -1), np.linspace(0, 1, 101), axis=1).T)
