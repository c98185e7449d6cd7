"""Classification of samples (predictions.csv) and of scenes (uint8 GeoTIFF)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from conftest import CHIAPAS_NAMES, PATCH_TREE_CLASSES, SCENE_1999
from geoml_hub.classification import (NODATA, PREDICTIONS_HEADER, class_names_from_raster, classify_scene,
                                      predict_samples)
from geoml_hub.errors import DataError, GridMismatchError, ModelError, ParameterError
from geoml_hub.models import load_model
from geoml_hub.samples import open_tree
from helpers import csv_header, read_csv_rows, read_raster, write_npy_tree, write_raster


# ---------------------------------------------------------------------------
# predict_samples


def test_predict_samples_csv(tmp_path, patch_model, patch_tree):
    model = load_model(patch_model.model_path, device="cpu")
    tree = open_tree(patch_tree)
    out = tmp_path / "pred" / "predictions.csv"
    result = predict_samples(patch_model.model_path, patch_tree, out, batch_size=7, device="cpu")
    assert csv_header(out) == list(PREDICTIONS_HEADER)
    rows = read_csv_rows(out)
    assert len(rows) == len(tree) == 48
    code_of = dict(zip(model.class_names, model.class_codes))
    proba = model.predict_proba(tree.read())
    for k, (row, s) in enumerate(zip(rows, tree.samples)):
        assert row["file"] == str(s.file) and int(row["index"]) == s.index
        assert row["reference"] == s.class_name
        assert row["predicted"] in PATCH_TREE_CLASSES
        assert int(row["predicted_code"]) == code_of[row["predicted"]]
        assert row["predicted"] == model.class_names[int(proba[k].argmax())]
        assert float(row["probability"]) == pytest.approx(float(proba[k].max()), abs=1e-3)
        assert 0.0 <= float(row["probability"]) <= 1.0
    assert list(result["reference"]) == [s.class_name for s in tree.samples]
    assert list(result["predicted"]) == [r["predicted"] for r in rows]
    assert result["probability"].shape == (48,) and result["probability"].dtype == np.float32
    # the classes are well separated: a trained model gets most right
    accuracy = np.mean(result["predicted"] == result["reference"])
    assert accuracy > 0.8


def test_predict_samples_mismatch(tmp_path, patch_model):
    five_bands = write_npy_tree(tmp_path / "five", {"a": [np.zeros((2, 5, 9, 9))], "b": [np.zeros((2, 5, 9, 9))]})
    with pytest.raises(ModelError, match="bands"):
        predict_samples(patch_model.model_path, five_bands, device="cpu")
    small = write_npy_tree(tmp_path / "small", {"a": [np.zeros((2, 4, 5, 5))]})
    with pytest.raises(ModelError, match="patch size"):
        predict_samples(patch_model.model_path, small, device="cpu")


# ---------------------------------------------------------------------------
# scenes: pixel model on the real Chiapas scene


@pytest.fixture(scope="module")
def chiapas_classification(tmp_path_factory, pixel_model):
    out = tmp_path_factory.mktemp("classify") / "chiapas.tif"
    res = classify_scene(pixel_model.model_path, SCENE_1999, out, device="cpu")
    return res


def expected_pixel_classes(model, scene):
    """Independent per-pixel prediction of a pixel model over a whole (bands, rows, cols) scene."""
    b, h, w = scene.shape
    x = scene[[i - 1 for i in model.bands]].reshape(len(model.bands), -1).T[:, :, None, None]
    codes = np.array(model.class_codes)
    return codes[model.predict_proba(x, batch_size=h * w).argmax(1)].reshape(h, w)


def test_classify_real_scene_grid_and_metadata(chiapas_classification, pixel_model, chiapas_scene):
    res = chiapas_classification
    assert res.path.is_file()
    with rasterio.open(SCENE_1999) as scene, rasterio.open(res.path) as out:
        assert out.count == 1
        assert out.dtypes[0] == "uint8"
        assert (out.height, out.width) == (scene.height, scene.width) == (250, 250)
        assert out.crs == scene.crs
        assert out.transform == scene.transform
        assert out.nodata == NODATA == 255
        cmap = out.colormap(1)
        for code in CHIAPAS_NAMES:
            assert code in cmap and len(cmap[code]) == 4
        assert len({cmap[c] for c in CHIAPAS_NAMES}) == len(CHIAPAS_NAMES)  # distinct colours
        tag = json.loads(out.tags()["CLASS_NAMES"])
        assert tag == {str(c): n for c, n in CHIAPAS_NAMES.items()}
        cls = out.read(1)
    assert class_names_from_raster(res.path) == CHIAPAS_NAMES
    assert set(np.unique(cls).tolist()) <= set(CHIAPAS_NAMES)  # no nodata: every input pixel is valid
    assert res.nodata_pixels == 0 and res.pixels == 62500 and res.stride == 1
    assert res.counts == {CHIAPAS_NAMES[c]: int((cls == c).sum()) for c in CHIAPAS_NAMES}
    model = load_model(pixel_model.model_path, device="cpu")
    assert np.array_equal(cls, expected_pixel_classes(model, chiapas_scene.astype(np.float32)))


def test_classify_real_scene_nodata(tmp_path, pixel_model, chiapas_scene, chiapas_classification):
    with rasterio.open(SCENE_1999) as src:
        profile = dict(src.profile)
    data = chiapas_scene.copy()
    data[2, 50:80, 100:140] = -9999  # nodata in one band is enough
    data[6, 200:203, 5:9] = -9999
    profile.update(nodata=-9999)
    scene = tmp_path / "holes.tif"
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(data)
    res = classify_scene(pixel_model.model_path, scene, tmp_path / "out.tif", device="cpu")
    cls, _ = read_raster(res.path)
    cls = cls[0]
    hole = np.zeros((250, 250), bool)
    hole[50:80, 100:140] = True
    hole[200:203, 5:9] = True
    assert np.all(cls[hole] == 255)
    assert not np.any(cls[~hole] == 255)
    original, _ = read_raster(chiapas_classification.path)
    assert np.array_equal(cls[~hole], original[0][~hole])
    assert res.nodata_pixels == int(hole.sum()) == 30 * 40 + 12
    assert sum(res.counts.values()) == 62500 - int(hole.sum())


@pytest.mark.parametrize("tile_size", [64, 37])
def test_tile_size_does_not_change_the_result(tmp_path, pixel_model, chiapas_classification, tile_size):
    res = classify_scene(pixel_model.model_path, SCENE_1999, tmp_path / "tiled.tif", tile_size=tile_size,
                         device="cpu")
    a, _ = read_raster(res.path)
    b, _ = read_raster(chiapas_classification.path)
    assert np.array_equal(a, b)
    assert res.counts == chiapas_classification.counts


def test_scene_as_single_band_files(tmp_path, pixel_model, chiapas_scene, chiapas_classification):
    with rasterio.open(SCENE_1999) as src:
        profile = dict(src.profile)
    profile.update(count=1)
    files = []
    for b in range(8):
        path = tmp_path / f"band_{b + 1}.tif"
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(chiapas_scene[b], 1)
        files.append(path)
    res = classify_scene(pixel_model.model_path, files, tmp_path / "from_files.tif", device="cpu")
    a, prof_a = read_raster(res.path)
    b, prof_b = read_raster(chiapas_classification.path)
    assert np.array_equal(a, b)
    assert prof_a["transform"] == prof_b["transform"] and prof_a["crs"] == prof_b["crs"]
    # a file off the grid is refused
    shifted = dict(profile, transform=rasterio.Affine(30.0, 0.0, 462435.0, 0.0, -30.0, 1741815.0))
    with rasterio.open(tmp_path / "band_off.tif", "w", **shifted) as dst:
        dst.write(chiapas_scene[7], 1)
    with pytest.raises(GridMismatchError, match="transform"):
        classify_scene(pixel_model.model_path, files[:7] + [tmp_path / "band_off.tif"], tmp_path / "x.tif",
                       device="cpu")
    assert not (tmp_path / "x.tif").exists()


def test_band_count_mismatch_and_band_map(tmp_path, pixel_model, chiapas_scene, chiapas_classification):
    with rasterio.open(SCENE_1999) as src:
        profile = dict(src.profile)
    # 9 bands: a constant band, then the 8 scene bands in reverse order
    data = np.concatenate([np.full((1, 250, 250), 1234, np.int16), chiapas_scene[::-1]])
    profile.update(count=9)
    scene = tmp_path / "nine.tif"
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(data)
    with pytest.raises(ModelError, match="9 bands") as info:
        classify_scene(pixel_model.model_path, scene, tmp_path / "bad.tif", device="cpu")
    assert "nine.tif" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "bad.tif").exists()
    res = classify_scene(pixel_model.model_path, scene, tmp_path / "mapped.tif", band_map=[9, 8, 7, 6, 5, 4, 3, 2],
                         device="cpu")
    a, _ = read_raster(res.path)
    b, _ = read_raster(chiapas_classification.path)
    assert np.array_equal(a, b)
    with pytest.raises(ModelError, match="band map"):
        classify_scene(pixel_model.model_path, scene, tmp_path / "m2.tif", band_map=[1, 2, 3], device="cpu")
    with pytest.raises(ModelError, match="outside"):
        classify_scene(pixel_model.model_path, scene, tmp_path / "m3.tif", band_map=[1, 2, 3, 4, 5, 6, 7, 10],
                       device="cpu")


def test_missing_scene(tmp_path, pixel_model):
    with pytest.raises(DataError, match="nowhere.tif"):
        classify_scene(pixel_model.model_path, tmp_path / "nowhere.tif", tmp_path / "o.tif", device="cpu")


def test_class_codes_must_fit_uint8(tmp_path):
    from geoml_hub.training import train_model

    root = write_npy_tree(tmp_path / "t", {"a": [np.zeros((6, 2, 1, 1))], "b": [np.ones((6, 2, 1, 1))]},
                          classes={"a": 1, "b": 300})
    res = train_model(root, tmp_path / "m.pt", model="cnn", epochs=1, widths=(4,), device="cpu")
    scene = write_raster(tmp_path / "s.tif", np.zeros((2, 5, 5), np.float32))
    with pytest.raises(ModelError, match="254"):
        classify_scene(res.model_path, scene, tmp_path / "o.tif", device="cpu")


# ---------------------------------------------------------------------------
# scenes: patch model with a stride on a synthetic multi-band GeoTIFF


def expected_patch_classes(model, scene, stride):
    """Block (i, j) of ``stride`` pixels takes the class of the patch centred on pixel (i*s + s//2, j*s + s//2)."""
    b, h, w = scene.shape
    pr, pc = model.patch_size
    pad = max(pr, pc) + stride
    padded = np.pad(scene, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    nbr, nbc = -(-h // stride), -(-w // stride)
    patches = []
    for i in range(nbr):
        for j in range(nbc):
            cr, cc = i * stride + stride // 2 + pad, j * stride + stride // 2 + pad
            patches.append(padded[:, cr - pr // 2:cr - pr // 2 + pr, cc - pc // 2:cc - pc // 2 + pc])
    codes = np.array(model.class_codes)
    pred = codes[model.predict_proba(np.stack(patches)).argmax(1)].reshape(nbr, nbc)
    return np.repeat(np.repeat(pred, stride, 0), stride, 1)[:h, :w]


@pytest.mark.parametrize("stride", [None, 1, 3, 5, 12])
def test_patch_model_with_stride(tmp_path, patch_model, patch_scene, stride):
    model = load_model(patch_model.model_path, device="cpu")
    res = classify_scene(model, patch_scene, tmp_path / "out.tif", stride=stride, device="cpu", method="patch")
    s = 4 if stride is None else stride  # default: half the 9-pixel patch
    assert res.stride == s
    cls, prof = read_raster(res.path)
    scene, sprof = read_raster(patch_scene)
    assert cls.shape == (1, 45, 53) and cls.dtype == np.uint8
    assert prof["transform"] == sprof["transform"] and prof["crs"] == sprof["crs"] and prof["nodata"] == 255
    expected = expected_patch_classes(model, scene.astype(np.float32), s)
    assert np.array_equal(cls[0], expected)
    assert set(np.unique(cls).tolist()) <= {3, 7, 11}
    assert res.nodata_pixels == 0


@pytest.mark.parametrize("stride, tile_size", [(4, 8), (4, 10), (3, 1), (1, 16)])
def test_patch_model_tile_size_does_not_change_the_result(tmp_path, patch_model, patch_scene, stride, tile_size):
    a = classify_scene(patch_model.model_path, patch_scene, tmp_path / "a.tif", stride=stride, tile_size=tile_size,
                       device="cpu")
    b = classify_scene(patch_model.model_path, patch_scene, tmp_path / "b.tif", stride=stride, tile_size=4096,
                       device="cpu")
    assert np.array_equal(read_raster(a.path)[0], read_raster(b.path)[0])
    assert a.counts == b.counts


def test_patch_model_recovers_synthetic_areas(tmp_path, patch_model, patch_scene):
    """The synthetic scene's three areas look like the three classes; a dense classification finds them."""
    res = classify_scene(patch_model.model_path, patch_scene, tmp_path / "dense.tif", stride=1, device="cpu")
    cls = read_raster(res.path)[0][0]
    truth = np.full((45, 53), 3)
    truth[:, 18:36] = 7
    truth[20:, 36:] = 11
    interior = np.zeros_like(truth, bool)
    interior[5:-5, 5:-5] = True
    for edge in (18, 36):  # leave out the pixels whose patch straddles two areas
        interior[:, edge - 5:edge + 5] = False
    interior[15:25, 36:] = False
    assert np.mean(cls[interior] == truth[interior]) > 0.9


def test_patch_model_nodata(tmp_path, patch_model):
    rng = np.random.default_rng(3)
    data = (100 + rng.normal(0, 2, (4, 30, 30))).astype(np.int16)
    data[0, 10:14, 20:25] = -1
    scene = write_raster(tmp_path / "nd.tif", data, nodata=-1)
    res = classify_scene(patch_model.model_path, scene, tmp_path / "o.tif", stride=3, device="cpu")
    cls = read_raster(res.path)[0][0]
    hole = np.zeros((30, 30), bool)
    hole[10:14, 20:25] = True
    assert np.all(cls[hole] == 255) and not np.any(cls[~hole] == 255)
    assert res.nodata_pixels == 20


@pytest.mark.parametrize("stride, tile_size", [(0, 512), (4, 0)])
def test_bad_stride_or_tile(tmp_path, patch_model, patch_scene, stride, tile_size):
    with pytest.raises(ParameterError):
        classify_scene(patch_model.model_path, patch_scene, tmp_path / "o.tif", stride=stride, tile_size=tile_size,
                       device="cpu")


def test_tta_is_the_mean_over_the_eight_dihedral_views(patch_model, patch_tree):
    import torch

    model = load_model(patch_model.model_path, device="cpu")
    x = open_tree(patch_tree).read([0, 20, 40])
    views = []
    for t in (False, True):
        base = np.swapaxes(x, -1, -2) if t else x
        for flip_c in (False, True):
            for flip_r in (False, True):
                v = base[..., ::-1] if flip_c else base
                views.append(v[..., ::-1, :] if flip_r else v)
    expected = np.mean([model.predict_proba(np.ascontiguousarray(v)) for v in views], axis=0)
    got = model.predict_proba(x, tta=True)
    assert np.allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, model.predict_proba(x), atol=1e-4)  # the views do change the answer
    assert np.allclose(got.sum(1), 1.0, atol=1e-5)


# ---------------------------------------------------------------------------
# dense (fully convolutional) inference


def test_dense_pixel_model_is_exact_on_the_real_scene(tmp_path, pixel_model, chiapas_scene):
    """Folded 1x1 convolutions: same classes and probabilities within 1e-5 of the per-pixel path."""
    from geoml_hub.dense import DensePixel

    model = load_model(pixel_model.model_path, device="cpu")
    x = chiapas_scene.reshape(8, -1).astype(np.float32)
    dense = DensePixel(model.network)
    ref = model.predict_proba(x.T[:, :, None, None], batch_size=65536)
    assert np.abs(dense.predict(x, proba=True) - ref).max() < 1e-5
    assert np.array_equal(dense.predict(x), ref.argmax(1))
    assert np.array_equal(dense.predict(x, batch=1000), ref.argmax(1))
    a = classify_scene(model, SCENE_1999, tmp_path / "dense.tif", device="cpu")  # auto: dense for pixel models
    b = classify_scene(model, SCENE_1999, tmp_path / "patch.tif", device="cpu", method="patch")
    assert np.array_equal(read_raster(a.path)[0], read_raster(b.path)[0])
    assert a.counts == b.counts and a.nodata_pixels == b.nodata_pixels


@pytest.mark.parametrize("log_input, band_statistics", [(True, False), (False, True)])
def test_dense_pixel_folding_variants(log_input, band_statistics):
    """log-input and band statistics (the head sees z and a zero std) fold too."""
    import torch

    from geoml_hub.dense import DensePixel
    from geoml_hub.networks import PatchCNN

    torch.manual_seed(0)
    net = PatchCNN(5, 4, 1, [6, 7], 0.0, band_statistics, log_input)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    net.norm.mean.uniform_(2, 5)
    net.norm.std.uniform_(0.5, 2)
    net.eval()
    x = np.random.default_rng(1).uniform(0, 200, (5, 3000)).astype(np.float32)
    with torch.inference_mode():
        ref = torch.softmax(net(torch.from_numpy(x.T.copy())[:, :, None, None]), 1).numpy()
    got = DensePixel(net).predict(x, proba=True)
    assert np.abs(got - ref).max() < 1e-5


def test_dense_patch_single_window_equals_the_network():
    """One patch, no margin: the fully convolutional path is the network itself (pooling, band
    statistics from pooled z and z**2, head)."""
    import torch

    from geoml_hub.dense import DensePatch
    from geoml_hub.networks import PatchCNN

    torch.manual_seed(0)
    net = PatchCNN(4, 3, 16, [8, 8], 0.0, True).eval()
    net.norm.mean.fill_(10.0)
    net.norm.std.fill_(3.0)
    x = np.random.default_rng(0).normal(10, 3, (4, 16, 16)).astype(np.float32)
    dense = DensePatch(net, (16, 16))
    assert dense.factor == 4 and dense.cells == (4, 4) and dense.margin % 4 == 0
    dense.margin = 0
    with torch.inference_mode():
        ref = net(torch.from_numpy(x)[None])
    assert torch.allclose(dense.window_logits(x, 1, 1, 16), ref, atol=1e-5)


@pytest.mark.parametrize("stride", [None, 2, 4, 6])
def test_dense_patch_model_agrees_with_per_patch(tmp_path, patch_model, patch_scene, stride):
    """Dense vs per-patch (the patch models' default) on the synthetic scene: near-total agreement, and the
    dense result does not depend on the tile size (the window margin covers the receptive field)."""
    a = classify_scene(patch_model.model_path, patch_scene, tmp_path / "a.tif", stride=stride, device="cpu",
                       method="dense")
    b = classify_scene(patch_model.model_path, patch_scene, tmp_path / "b.tif", stride=stride, device="cpu",
                       method="patch")
    c = classify_scene(patch_model.model_path, patch_scene, tmp_path / "c.tif", stride=stride, device="cpu",
                       tile_size=12, method="dense")
    d = classify_scene(patch_model.model_path, patch_scene, tmp_path / "d.tif", stride=stride, device="cpu")
    da, db, dc, dd = (read_raster(r.path)[0][0] for r in (a, b, c, d))
    assert np.mean(da == db) > 0.9
    assert np.array_equal(da, dc)
    assert np.array_equal(dd, db)  # auto: per-patch for patch models


def test_unknown_method(tmp_path, patch_model, patch_scene):
    with pytest.raises(ParameterError, match="method"):
        classify_scene(patch_model.model_path, patch_scene, tmp_path / "o.tif", method="fast", device="cpu")
