"""Training with PyTorch and the model file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import PATCH_TREE_CLASSES
from geoml_hub.errors import DataError, ModelError, ParameterError
from geoml_hub.models import FORMAT, load_model
from geoml_hub.samples import open_tree
from geoml_hub.training import HISTORY_HEADER, stratified_split, train_model
from helpers import assert_png, csv_header, read_csv_rows, write_npy_tree

TINY = {"model": "cnn", "epochs": 2, "widths": (8,), "device": "cpu", "batch_size": 16}


def per_band_stats(x):
    x = np.asarray(x, dtype=np.float64)
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))


def test_train_outputs_and_model_round_trip(tmp_path, patch_tree):
    out = tmp_path / "models" / "m.pt"
    res = train_model(patch_tree, out, seed=0, refit=False, **TINY)
    assert res.model_path == out and out.is_file()
    assert res.history_path == tmp_path / "models" / "m.history.csv"
    assert res.curves_path == tmp_path / "models" / "m.curves.png"
    assert csv_header(res.history_path) == list(HISTORY_HEADER) == [
        "phase", "epoch", "train_loss", "train_overall_accuracy", "val_loss", "val_overall_accuracy", "learning_rate",
        "seconds"]
    rows = read_csv_rows(res.history_path)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r in rows:
        assert float(r["train_loss"]) > 0 and 0 <= float(r["train_overall_accuracy"]) <= 1
        assert float(r["val_loss"]) > 0 and 0 <= float(r["val_overall_accuracy"]) <= 1
        assert float(r["learning_rate"]) > 0 and float(r["seconds"]) >= 0
    assert_png(res.curves_path)
    assert len(res.history) == 2 and 1 <= res.best_epoch <= 2
    assert res.n_train + res.n_val == 48

    model = load_model(out, device="cpu")
    tree = open_tree(patch_tree)
    assert model.class_names == list(PATCH_TREE_CLASSES) == tree.class_names
    assert model.class_codes == [3, 7, 11]
    assert model.bands == [1, 2, 3, 4] and model.sample_bands == 4
    assert tuple(model.patch_size) == (9, 9) and not model.is_pixel_model
    assert model.device == "cpu"
    meta = model.meta
    assert meta["format"] == FORMAT
    assert meta["training"]["best_epoch"] == res.best_epoch
    assert meta["training"]["n_train"] == res.n_train
    assert meta["hyperparameters"]["widths"] == [8]
    # normalisation: the training split's per-band statistics (the split is seeded and stratified)
    tr, va = stratified_split(tree.labels(), 0.15, 0)
    assert len(tr) == res.n_train and len(va) == res.n_val
    mean, std = per_band_stats(tree.read(tr))
    assert np.allclose(meta["normalization"]["mean"], mean, rtol=1e-6)
    assert np.allclose(meta["normalization"]["std"], std, rtol=1e-6)
    all_mean, _ = per_band_stats(tree.read())
    assert not np.allclose(meta["normalization"]["mean"], all_mean, rtol=1e-9)  # validation samples left out
    # probabilities are a distribution over the classes
    p = model.predict_proba(tree.read([0, 20, 40]))
    assert p.shape == (3, 3) and np.allclose(p.sum(1), 1.0, atol=1e-5)


def test_refit_on_training_and_validation_samples(tmp_path, patch_tree):
    """refit: after the validation split chose the best epoch, a fresh network is trained on all
    samples for that many epochs; its normalisation uses all samples."""
    res = train_model(patch_tree, tmp_path / "m.pt", seed=0, refit=True, **{**TINY, "epochs": 3})
    rows = read_csv_rows(res.history_path)
    select = [r for r in rows if r["phase"] == "select"]
    refit = [r for r in rows if r["phase"] == "refit"]
    assert [int(r["epoch"]) for r in select] == [1, 2, 3]
    assert [int(r["epoch"]) for r in refit] == list(range(1, res.best_epoch + 1))
    assert all(r["val_loss"].lower() == "nan" for r in refit)
    model = load_model(res.model_path, device="cpu")
    assert model.meta["training"]["refit_samples"] == 48
    mean, std = per_band_stats(open_tree(patch_tree).read())
    assert np.allclose(model.meta["normalization"]["mean"], mean, rtol=1e-6)
    assert np.allclose(model.meta["normalization"]["std"], std, rtol=1e-6)
    no_refit = load_model(train_model(patch_tree, tmp_path / "n.pt", seed=0, refit=False, **TINY).model_path, "cpu")
    assert no_refit.meta["manifest_sha256"] != model.meta["manifest_sha256"]  # the hash covers the samples used


def test_normalisation_without_validation_split(tmp_path, patch_tree):
    res = train_model(patch_tree, tmp_path / "m.pt", seed=0, val_fraction=0.0, **TINY)
    assert res.n_val == 0 and res.n_train == 48 and res.val_overall_accuracy is None
    model = load_model(res.model_path, device="cpu")
    mean, std = per_band_stats(open_tree(patch_tree).read())
    assert np.allclose(model.meta["normalization"]["mean"], mean, rtol=1e-6)
    assert np.allclose(model.meta["normalization"]["std"], std, rtol=1e-6)
    rows = read_csv_rows(res.history_path)
    assert all(r["val_loss"].lower() == "nan" for r in rows)


def test_stratified_split_properties():
    labels = np.array([0] * 20 + [1] * 7 + [2] * 1)
    a, b = stratified_split(labels, 0.25, seed=3)
    assert np.intersect1d(a, b).size == 0 and np.union1d(a, b).tolist() == list(range(28))
    assert np.bincount(labels[b], minlength=3).tolist() == [5, 2, 0]
    a2, b2 = stratified_split(labels, 0.25, seed=3)
    assert np.array_equal(a, a2) and np.array_equal(b, b2)


def test_band_subset(tmp_path, patch_tree):
    res = train_model(patch_tree, tmp_path / "m.pt", seed=0, bands=(2, 3, 4), **TINY)
    model = load_model(res.model_path, device="cpu")
    assert model.bands == [2, 3, 4] and model.sample_bands == 4
    assert model.meta["architecture"]["in_bands"] == 3
    tree = open_tree(patch_tree)
    tr, _ = stratified_split(tree.labels(), 0.15, 0)
    mean, std = per_band_stats(tree.read(tr)[:, 1:4])  # the training split's statistics, of the chosen bands
    assert np.allclose(model.meta["normalization"]["mean"], mean, rtol=1e-6)
    assert np.allclose(model.meta["normalization"]["std"], std, rtol=1e-6)
    assert model.predict_proba(tree.read([0])[:, 1:4]).shape == (1, 3)


@pytest.mark.parametrize("bands", [(0, 1), (1, 5), ()])
def test_bad_band_subset(tmp_path, patch_tree, bands):
    with pytest.raises(ParameterError):
        train_model(patch_tree, tmp_path / "m.pt", bands=bands, **TINY)
    assert not (tmp_path / "m.pt").exists()


def test_pixel_classifier(tmp_path):
    rng = np.random.default_rng(0)
    spec = {}
    for k, name in enumerate(("dark", "bright")):
        x = rng.normal(1000 + 800 * k, 50, size=(40, 8, 1, 1)).astype(np.int16)
        spec[name] = [x[:25], x[25:]]
    root = write_npy_tree(tmp_path / "pixels", spec)
    res = train_model(root, tmp_path / "pixel.pt", model="cnn", seed=0, epochs=3, widths=(8,), device="cpu")
    model = load_model(res.model_path, device="cpu")
    assert tuple(model.patch_size) == (1, 1) and model.is_pixel_model
    assert model.bands == list(range(1, 9))
    assert model.class_names == ["bright", "dark"] and model.class_codes == [0, 1]
    p = model.predict_proba(np.stack([spec["dark"][0][0], spec["bright"][0][0]]))
    assert p.shape == (2, 2)


def test_same_seed_same_weights(tmp_path, patch_tree):
    a = train_model(patch_tree, tmp_path / "a.pt", seed=5, **TINY)
    b = train_model(patch_tree, tmp_path / "b.pt", seed=5, **TINY)
    sa = torch.load(a.model_path, weights_only=True)["state_dict"]
    sb = torch.load(b.model_path, weights_only=True)["state_dict"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    c = train_model(patch_tree, tmp_path / "c.pt", seed=6, **TINY)
    sc = torch.load(c.model_path, weights_only=True)["state_dict"]
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


def test_train_from_manifest_and_sample_set(tmp_path, patch_tree):
    from geoml_hub.samples import write_manifest

    tree = open_tree(patch_tree)
    manifest = write_manifest(tmp_path / "manifest.csv", tree.subset(range(0, 48, 2)))
    res = train_model(manifest, tmp_path / "m.pt", seed=0, **TINY)
    assert res.n_train + res.n_val == 24
    res2 = train_model(tree.subset(range(0, 48, 2)), tmp_path / "m2.pt", seed=0, **TINY)
    assert res2.n_train == res.n_train
    assert load_model(res.model_path).class_codes == [3, 7, 11]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_gpu(tmp_path, patch_tree):
    with pytest.raises(ParameterError, match="cuda"):
        train_model(patch_tree, tmp_path / "m.pt", **{**TINY, "device": "cuda"})
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("override", [{"epochs": 0}, {"batch_size": 0}, {"val_fraction": 1.0},
                                      {"learning_rate": 0.0}, {"patience": 0}, {"widths": ()},
                                      {"device": "tpu"}, {"no_such_option": 1}])
def test_bad_hyperparameters(tmp_path, patch_tree, override):
    with pytest.raises(ParameterError):
        train_model(patch_tree, tmp_path / "m.pt", **{**TINY, **override})


def test_single_class_is_refused(tmp_path):
    root = write_npy_tree(tmp_path / "t", {"only": [np.zeros((6, 2, 1, 1))]})
    with pytest.raises(DataError):
        train_model(root, tmp_path / "m.pt", **TINY)


def test_early_stopping(tmp_path):
    """Random labels: the validation loss stops improving quickly; patience 1 stops right after the best epoch."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, size=(80, 3, 1, 1)).astype(np.float32)
    root = write_npy_tree(tmp_path / "noise", {"a": [x[:40]], "b": [x[40:]]})
    res = train_model(root, tmp_path / "m.pt", model="cnn", epochs=40, patience=1, widths=(8,), device="cpu", seed=0,
                      val_fraction=0.3, learning_rate=0.05, refit=False)
    assert len(res.history) < 40
    assert len(res.history) == res.best_epoch + 1
    val_losses = [r["val_loss"] for r in res.history]
    assert res.best_epoch == int(np.argmin(val_losses)) + 1
    assert res.val_overall_accuracy == res.history[res.best_epoch - 1]["val_overall_accuracy"]
    model = load_model(res.model_path)
    assert model.meta["training"]["epochs_run"] == len(res.history)
    assert len(read_csv_rows(res.history_path)) == len(res.history)


def test_progress_once_per_epoch(tmp_path, patch_tree):
    calls = []
    train_model(patch_tree, tmp_path / "m.pt", progress=lambda f, m: calls.append(f), **{**TINY, "epochs": 3})
    assert calls[0] == 0.0 and calls[-1] == 1.0
    assert all(0.0 <= f <= 1.0 for f in calls)
    assert all(b >= a for a, b in zip(calls, calls[1:]))


# ---------------------------------------------------------------------------
# load_model checks


@pytest.fixture(scope="module")
def payload(patch_model):
    return torch.load(patch_model.model_path, map_location="cpu", weights_only=True)


def test_load_model_missing(tmp_path):
    with pytest.raises(ModelError, match="not found") as info:
        load_model(tmp_path / "nope.pt")
    assert "nope.pt" in str(info.value)


def test_load_model_not_a_model_file(tmp_path):
    bad = tmp_path / "text.pt"
    bad.write_text("this is not a model\n" * 10)
    with pytest.raises(ModelError) as info:
        load_model(bad)
    assert "text.pt" in str(info.value)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ModelError, match="not a geoml-hub model"):
        load_model(other)
    listing = tmp_path / "list.pt"
    torch.save([1, 2, 3], listing)
    with pytest.raises(ModelError):
        load_model(listing)


def _tampered(tmp_path, payload, change):
    import copy

    p = copy.deepcopy(payload)
    change(p)
    path = tmp_path / "tampered.pt"
    torch.save(p, path)
    return path


@pytest.mark.parametrize("change, match", [
    (lambda p: p.update(format="some-other-format"), "not a geoml-hub model"),
    (lambda p: p.update(format_version=99), "newer"),
    (lambda p: p.pop("normalization"), "lacks"),
    (lambda p: p["normalization"].update(mean=p["normalization"]["mean"][:-1]), "normalisation"),
    (lambda p: p["normalization"].update(std=p["normalization"]["std"] + [1.0]), "normalisation"),
    (lambda p: p["normalization"].update(mean=[m + 100.0 for m in p["normalization"]["mean"]]), "normalisation"),
    (lambda p: p.update(classes=p["classes"][:-1]), "class"),
    (lambda p: p.update(bands=p["bands"][:-1]), "band"),
    (lambda p: p.update(bands=[1, 2, 3, 9]), "band"),
    (lambda p: p["state_dict"].pop(next(iter([k for k in p["state_dict"] if k.endswith("weight")]))), "weights"),
    (lambda p: p["architecture"].update(widths=[16]), "weights"),
    (lambda p: p["architecture"].update(name="resnet"), "architecture"),
])
def test_load_model_tampered(tmp_path, payload, change, match):
    path = _tampered(tmp_path, payload, change)
    with pytest.raises(ModelError, match=match):
        load_model(path, device="cpu")


def test_load_model_untampered_copy_loads(tmp_path, payload):
    path = _tampered(tmp_path, payload, lambda p: None)
    model = load_model(path, device="cpu")
    assert model.class_codes == [3, 7, 11]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_load_model_cuda_without_gpu(patch_model):
    with pytest.raises(ParameterError):
        load_model(patch_model.model_path, device="cuda")

