"""The tree model families (forest, boosting, ensemble) beside the CNN, their features, the one
model file, and model selection by cross-validation (stratified folds, whole regions per fold)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from helpers import EUROSAT, SCENE_1999, assert_png, read_csv_rows
from geoml_hub.classification import classify_scene
from geoml_hub.errors import ModelError, ParameterError
from geoml_hub.features import compute_features, feature_names, feature_spec, resolve_band_names, roles_from_names
from geoml_hub.models import load_model
from geoml_hub.samples import load_samples, open_tree
from geoml_hub.selection import cross_validate, cv_splits, parse_candidates
from geoml_hub.training import train_model
from geoml_hub.validation import evaluate_model

FAST = {"n_estimators": 20, "seed": 0}


@pytest.fixture(scope="module")
def scene_window(tmp_path_factory, data_dir):
    """A 60 x 80 window of the real 1999 Chiapas scene, written as its own GeoTIFF (all 8 bands)."""
    path = tmp_path_factory.mktemp("window") / "window.tif"
    with rasterio.open(SCENE_1999) as src:
        win = Window(100, 20, 80, 60)
        data = src.read(window=win)
        profile = dict(src.profile, width=80, height=60, transform=src.window_transform(win))
    profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path, data


@pytest.mark.parametrize("family", ["forest", "boosting", "ensemble"])
def test_tree_family_trains_saves_loads_evaluates_classifies(tmp_path, chiapas_samples, scene_window, family):
    res = train_model(chiapas_samples.root, tmp_path / "m.pt", model=family, **FAST)
    assert res.model_path.is_file() and res.history_path.is_file()
    assert_png(res.curves_path)
    assert 0.0 <= res.val_overall_accuracy <= 1.0 and res.best_epoch == 1
    model = load_model(res.model_path)
    assert model.family == family and model.network is None
    assert model.meta["format_version"] == 2 and "sklearn" in model.meta["versions"]
    # the Chiapas stack: 8 bands, no usable descriptions -> the Landsat 7 8-band preset -> indices
    feats = model.meta["features"]
    assert feats["band_names_source"] == "preset:landsat7_8band"
    assert feats["indices"]["NDVI"] == [3, 2] and feats["kind"] == "pixel_values"
    assert len(model.meta["normalization"]["mean"]) == 8
    sample_set = load_samples(chiapas_samples.root)
    x = sample_set.read(range(50))
    p = model.predict_proba(x)
    assert p.shape == (50, 5) and p.dtype == np.float32 and np.allclose(p.sum(1), 1.0, atol=1e-5)
    # evaluation through the same path as the CNN
    qc = evaluate_model(res.model_path, chiapas_samples.root, tmp_path / "qc")
    assert qc["n"] == len(sample_set) and qc["overall_accuracy"] > 0.5
    # classification of a window of the real scene: every pixel as predict_proba says
    path, data = scene_window
    cls = classify_scene(res.model_path, path, tmp_path / "cls.tif")
    with rasterio.open(cls.path) as src:
        out = src.read(1)
    direct = np.array(model.class_codes)[model.predict_proba(data.reshape(8, -1).T[:, :, None, None]).argmax(1)]
    assert np.array_equal(out.ravel(), direct)
    assert sum(cls.counts.values()) == 60 * 80


def test_patch_forest_on_eurosat_uses_sentinel2_indices(tmp_path, data_dir):
    tree = open_tree(EUROSAT)
    subset = tree.subset([i for i in range(len(tree)) if i % 5 == 0])
    res = train_model(subset, tmp_path / "m.pt", model="forest", val_fraction=0.0, **FAST)
    model = load_model(res.model_path)
    feats = model.meta["features"]
    assert feats["band_names_source"] == "preset:sentinel2" and feats["kind"] == "patch_statistics"
    assert feats["indices"]["NDVI"] == [7, 3] and feats["indices"]["NDBI"] == [10, 7]
    x = tree.read(range(3))
    assert model.predict_proba(x).shape == (3, 10)
    # without indices, and with a band subset whose names lack NIR: none, and the metadata says why
    res = train_model(subset, tmp_path / "b.pt", model="forest", val_fraction=0.0, bands=(2, 3, 4), **FAST)
    feats = load_model(res.model_path).meta["features"]
    assert feats["indices"] == {} and "no red/NIR/SWIR pair" in feats["indices_note"]
    assert feats["band_names"] == ["B02", "B03", "B04"]


def test_explicit_band_names_and_unknown_bands(tmp_path, patch_tree):
    res = train_model(patch_tree, tmp_path / "u.pt", model="forest", **FAST)
    feats = load_model(res.model_path).meta["features"]  # 4 bands: no preset
    assert feats["band_names"] is None and feats["indices"] == {} and "band names unknown" in feats["indices_note"]
    res = train_model(patch_tree, tmp_path / "n.pt", model="forest", band_names="blue,green,red,NIR", **FAST)
    feats = load_model(res.model_path).meta["features"]
    assert feats["band_names_source"] == "band_names" and feats["indices"] == {"NDVI": [3, 2], "NDWI": [1, 3]}
    with pytest.raises(ParameterError, match="3 given but the samples have 4 bands"):
        train_model(patch_tree, tmp_path / "x.pt", model="forest", band_names="a,b,c", **FAST)
    with pytest.raises(ParameterError, match="model must be one of"):
        train_model(patch_tree, tmp_path / "x.pt", model="svm")


def test_features_by_hand():
    rng = np.random.default_rng(0)
    x = rng.uniform(100, 3000, (4, 6, 5, 5)).astype(np.float32)
    spec = feature_spec(6, range(1, 7), (5, 5))
    assert spec["band_names"] == ["B1", "B2", "B3", "B4", "B5", "B7"]
    f = compute_features(x, spec)
    names = feature_names(spec, 6)
    assert f.shape == (4, len(names))
    ndvi = (x[:, 3] - x[:, 2]) / (x[:, 3] + x[:, 2])
    assert f[:, names.index("mean NDVI")] == pytest.approx(ndvi.mean((1, 2)), rel=1e-5)
    assert f[:, names.index("q50 B3")] == pytest.approx(np.median(x[:, 2].reshape(4, -1), 1), rel=1e-5)
    tex = (np.abs(np.diff(x[:, 0], axis=1)).mean((1, 2)) + np.abs(np.diff(x[:, 0], axis=2)).mean((1, 2))) / 2
    assert f[:, names.index("texture B1")] == pytest.approx(tex / (x[:, 0].mean((1, 2)) + 1), rel=1e-4)
    pixel = feature_spec(6, range(1, 7), (1, 1))
    fp = compute_features(x[:, :, :1, :1], pixel)
    assert fp.shape == (4, 6 + 5) and fp[:, 0] == pytest.approx(x[:, 0, 0, 0])
    # descriptions that name the roles win over the preset
    assert roles_from_names(["Blue", "Green", "Red", "Near infrared", "SWIR 1", "SWIR 2"]) == {
        "blue": 0, "green": 1, "red": 2, "nir": 3, "swir1": 4, "swir2": 5}
    named = resolve_band_names(6, descriptions=["blue", "green", "red", "NIR", "SWIR 1", "SWIR 2"])
    assert named["source"] == "descriptions"


def test_old_cnn_model_file_still_loads(tmp_path, patch_model):
    import torch

    payload = torch.load(patch_model.model_path, weights_only=True)
    assert payload["family"] == "cnn" and payload["format_version"] == 1
    del payload["family"]  # as written before the tree families existed
    torch.save(payload, tmp_path / "old.pt")
    model = load_model(tmp_path / "old.pt", device="cpu")
    assert model.family == "cnn" and model.network is not None


def test_tampered_or_unsafe_estimator_is_refused(tmp_path, patch_tree):
    import skops.io as sio
    import torch
    from sklearn.preprocessing import FunctionTransformer

    res = train_model(patch_tree, tmp_path / "m.pt", model="forest", **FAST)
    payload = torch.load(res.model_path, weights_only=True)
    bad = dict(payload, estimator=torch.zeros(100, dtype=torch.uint8))
    torch.save(bad, tmp_path / "garbage.pt")
    with pytest.raises(ModelError, match="unreadable"):
        load_model(tmp_path / "garbage.pt")
    # an estimator that would call a function outside scikit-learn/NumPy is never loaded
    blob = bytearray(sio.dumps(FunctionTransformer(func=np.testing.assert_equal)))
    unsafe = dict(payload, estimator=torch.frombuffer(blob, dtype=torch.uint8).clone())
    torch.save(unsafe, tmp_path / "unsafe.pt")
    with pytest.raises(ModelError, match="not loaded for safety"):
        load_model(tmp_path / "unsafe.pt")


def test_spatial_folds_never_share_a_region(chiapas_samples):
    sample_set = load_samples(chiapas_samples.root)
    labels = sample_set.labels()
    groups = np.array([str(s.file) for s in sample_set.samples])
    regions = read_csv_rows(chiapas_samples.root / "regions.csv")
    assert len(np.unique(groups)) == len(regions) == 31  # one container per real region
    splits, kind = cv_splits(labels, 5, 0, groups)
    assert len(splits) == 5 and "regions" in kind
    tested = np.concatenate([te for _, te in splits])
    assert sorted(tested.tolist()) == list(range(len(labels)))  # every pixel tested once
    for tr, te in splits:
        assert set(groups[tr]).isdisjoint(groups[te])
    # the stratified (patch) folds: every sample once, class shares kept
    splits, kind = cv_splits(labels, 5, 0)
    assert "stratified" in kind
    for _, te in splits:
        assert abs(np.mean(labels[te] == 0) - np.mean(labels == 0)) < 0.05


def test_cross_validate_table_and_plot(tmp_path, chiapas_samples):
    sample_set = load_samples(chiapas_samples.root)
    groups = [str(s.file) for s in sample_set.samples]
    cv = cross_validate(sample_set, tmp_path, ["forest", "boosting", "ensemble"], 3, 0, {"n_estimators": 20}, groups)
    assert [r["model"] for r in cv["candidates"]] == ["forest", "boosting", "ensemble"]
    assert cv["n_folds"] == 3 and cv["chosen"] in ("forest", "boosting", "ensemble")
    for row in cv["candidates"]:
        assert len(row["fold_overall_accuracy"]) == 3
        assert set(row["tpr"]) == set(sample_set.class_names)
    assert_png(tmp_path / "cv.png")
    assert len(read_csv_rows(tmp_path / "cv.csv")) == 9
    with pytest.raises(ParameterError, match="candidates must be"):
        parse_candidates("forest,svm")


def test_cli_model_choice(tmp_path, capsys, patch_tree):
    from geoml_hub.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", str(patch_tree), "--out", str(tmp_path / "m.pt"), "--model", "svm"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "argument --model: invalid choice: 'svm'" in err and "Traceback" not in err
    assert not (tmp_path / "m.pt").exists()
    rc = main(["-q", "pipeline", str(patch_tree), "--out", str(tmp_path / "p"), "--candidates", "forest,svm"])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().startswith("geoml-hub: error:") and "candidates must be" in err
    assert not (tmp_path / "p").exists()
    rc = main(["-q", "train", str(patch_tree), "--out", str(tmp_path / "m.pt"), "--model", "boosting",
               "--n-estimators", "20"])
    out = capsys.readouterr().out
    assert rc == 0 and "trained boosting" in out and load_model(tmp_path / "m.pt").family == "boosting"


def test_ensemble_candidate_is_the_soft_vote_of_its_members(chiapas_samples):
    """cross_validate scores the ensemble as the mean of the forest's and boosting's probabilities
    of the same fold: exactly what the saved VotingClassifier predicts."""
    from geoml_hub.training import make_estimator

    sample_set = load_samples(chiapas_samples.root)
    x = sample_set.read()
    spec = feature_spec(sample_set.bands, range(1, sample_set.bands + 1), (1, 1))
    f, y = compute_features(x, spec), sample_set.labels()
    tr, te = np.arange(len(y)) % 3 != 0, np.arange(len(y)) % 3 == 0
    vote = make_estimator("ensemble", 20, 0).fit(f[tr], y[tr]).predict_proba(f[te])
    members = [make_estimator(k, 20, 0).fit(f[tr], y[tr]).predict_proba(f[te]) for k in ("forest", "boosting")]
    assert np.allclose(vote, (members[0] + members[1]) / 2, atol=1e-6)
