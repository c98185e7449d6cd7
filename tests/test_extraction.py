"""Sample extraction from a labelled scene, and spatial region splits."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from scipy import ndimage

from conftest import CHIAPAS_COUNTS, CHIAPAS_NAMES, LABELS, SCENE_1999, SCENE_2002
from geoml_hub.errors import DataError, GridMismatchError, ParameterError
from geoml_hub.extraction import extract_samples, split_regions
from geoml_hub.samples import open_tree
from helpers import read_csv_rows, read_json, read_raster, write_raster

EIGHT = np.ones((3, 3), bool)


def independent_regions(labels):
    """(code, bbox, pixel coordinates row-major) of each 8-connected same-code region."""
    out = []
    for code in sorted(set(np.unique(labels).tolist()) - {0}):
        lab, n = ndimage.label(labels == code, structure=EIGHT)
        for k in range(1, n + 1):
            rr, cc = np.nonzero(lab == k)
            out.append((int(code), (int(rr.min()), int(rr.max()), int(cc.min()), int(cc.max())), rr, cc))
    return out


def test_extract_real_chiapas_counts_and_codes(chiapas_samples, chiapas_labels):
    res = chiapas_samples
    assert res.counts == CHIAPAS_COUNTS
    assert res.skipped_nodata == 0
    for code, name in CHIAPAS_NAMES.items():
        assert CHIAPAS_COUNTS[name] == int((chiapas_labels == code).sum())
    assert read_json(res.root / "classes.json") == {"forest": 1, "water": 2, "herbaceous": 3, "barren": 4, "urban": 5}
    tree = open_tree(res.root)
    assert dict(tree.classes) == {"forest": 1, "water": 2, "herbaceous": 3, "barren": 4, "urban": 5}
    assert tree.counts() == CHIAPAS_COUNTS
    assert tree.bands == 8 and tuple(tree.patch_size) == (1, 1) and tree.dtype == "int16"
    assert len(tree) == 718


def test_extracted_samples_equal_scene_pixels(chiapas_samples, chiapas_scene, chiapas_labels):
    """Each region file holds the scene pixels of one 8-connected region, row-major."""
    root = chiapas_samples.root
    rows = read_csv_rows(root / "regions.csv")
    regions = independent_regions(chiapas_labels)
    assert len(rows) == len(regions) == len(chiapas_samples.regions)
    by_bbox = {(code, bbox): (rr, cc) for code, bbox, rr, cc in regions}
    total = 0
    for row in rows:
        code = int(row["code"])
        bbox = (int(row["row_min"]), int(row["row_max"]), int(row["col_min"]), int(row["col_max"]))
        rr, cc = by_bbox[(code, bbox)]
        assert int(row["pixels"]) == int(row["samples"]) == len(rr)
        assert row["class"] == CHIAPAS_NAMES[code]
        arr = np.load(root / row["file"])
        assert row["file"].startswith(CHIAPAS_NAMES[code] + "/")
        assert arr.shape == (len(rr), 8, 1, 1) and arr.dtype == np.int16
        assert np.array_equal(arr[:, :, 0, 0], chiapas_scene[:, rr, cc].T)
        total += len(rr)
    assert total == 718


def test_extract_patch_size_3(tmp_path, chiapas_scene, chiapas_labels):
    res = extract_samples(SCENE_1999, LABELS, tmp_path / "p3", patch_size=3, class_names=CHIAPAS_NAMES)
    assert res.counts == CHIAPAS_COUNTS
    tree = open_tree(res.root)
    assert tuple(tree.patch_size) == (3, 3) and tree.bands == 8
    padded = np.pad(chiapas_scene, ((0, 0), (1, 1), (1, 1)), mode="edge")
    by_bbox = {(code, bbox): (rr, cc) for code, bbox, rr, cc in independent_regions(chiapas_labels)}
    for row in read_csv_rows(res.root / "regions.csv"):
        arr = np.load(res.root / row["file"])
        assert arr.shape[1:] == (8, 3, 3)
        bbox = tuple(int(row[k]) for k in ("row_min", "row_max", "col_min", "col_max"))
        rr, cc = by_bbox[(int(row["code"]), bbox)]
        expected = np.stack([padded[:, r:r + 3, c:c + 3] for r, c in zip(rr, cc)])  # window centred on (r, c)
        assert np.array_equal(arr, expected)
        assert np.array_equal(arr[:, :, 1, 1], chiapas_scene[:, rr, cc].T)


@pytest.mark.parametrize("size", [2, 4, 0, -1])
def test_even_or_bad_patch_size(tmp_path, size):
    with pytest.raises(ParameterError, match="odd"):
        extract_samples(SCENE_1999, LABELS, tmp_path / "x", patch_size=size)
    assert not (tmp_path / "x").exists()


def test_extract_default_names_are_codes(tmp_path):
    res = extract_samples(SCENE_2002, LABELS, tmp_path / "codes")
    assert res.counts == {str(c): CHIAPAS_COUNTS[n] for c, n in CHIAPAS_NAMES.items()}
    assert read_json(res.root / "classes.json") == {"1": 1, "2": 2, "3": 3, "4": 4, "5": 5}


def test_extract_replaces_existing_tree(tmp_path):
    out = tmp_path / "tree"
    (out / "stale").mkdir(parents=True)
    (out / "stale" / "old.npy").write_bytes(b"x")
    extract_samples(SCENE_1999, LABELS, out, class_names=CHIAPAS_NAMES)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(CHIAPAS_COUNTS)
    assert [p.name for p in tmp_path.iterdir()] == ["tree"]  # no temporary directory left behind


def test_extract_skips_nodata_pixels(tmp_path, chiapas_scene, chiapas_labels):
    with rasterio.open(SCENE_1999) as src:
        profile = dict(src.profile)
    data = chiapas_scene.copy()
    water = chiapas_labels == 2
    rr, cc = np.nonzero(water)
    data[0, rr[:5], cc[:5]] = -9999
    scene = tmp_path / "holes.tif"
    with rasterio.open(scene, "w", **dict(profile, nodata=-9999)) as dst:
        dst.write(data)
    res = extract_samples(scene, LABELS, tmp_path / "t", class_names=CHIAPAS_NAMES)
    assert res.skipped_nodata == 5
    assert res.counts == dict(CHIAPAS_COUNTS, water=11)


def _labels_like(tmp_path, name, **changes):
    with rasterio.open(LABELS) as src:
        profile = dict(src.profile)
        data = src.read(1)
    shape = changes.pop("shape", None)
    if shape is not None:
        data = data[:shape[0], :shape[1]]
        profile.update(height=shape[0], width=shape[1])
    profile.update(changes)
    profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
    path = tmp_path / name
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


@pytest.mark.parametrize("change, what", [
    ({"shape": (249, 250)}, "shape"),
    ({"transform": rasterio.Affine(30.0, 0.0, 462435.0, 0.0, -30.0, 1741815.0)}, "transform"),
    ({"transform": rasterio.Affine(15.0, 0.0, 462405.0, 0.0, -15.0, 1741815.0)}, "transform"),
    ({"crs": CRS.from_epsg(32616)}, "CRS"),
])
def test_extract_grid_mismatch(tmp_path, change, what):
    ref = _labels_like(tmp_path, "ref.tif", **change)
    with pytest.raises(GridMismatchError, match=what) as info:
        extract_samples(SCENE_1999, ref, tmp_path / "out")
    assert "ref.tif" in str(info.value)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ref.tif"]


def test_extract_unlabelled_reference(tmp_path):
    ref = _labels_like(tmp_path, "empty.tif")
    with rasterio.open(ref, "r+") as dst:
        dst.write(np.zeros((250, 250), np.uint8), 1)
    with pytest.raises(DataError, match="no labelled pixel"):
        extract_samples(SCENE_1999, ref, tmp_path / "out")


def test_extract_missing_files(tmp_path):
    with pytest.raises(DataError, match="missing.tif"):
        extract_samples(tmp_path / "missing.tif", LABELS, tmp_path / "out")
    with pytest.raises(DataError, match="nolabels.tif"):
        extract_samples(SCENE_1999, tmp_path / "nolabels.tif", tmp_path / "out")


def test_extract_from_single_band_files(tmp_path, chiapas_scene):
    with rasterio.open(SCENE_1999) as src:
        profile = dict(src.profile, count=1)
    files = []
    for b in range(8):
        files.append(tmp_path / f"b{b}.tif")
        with rasterio.open(files[-1], "w", **profile) as dst:
            dst.write(chiapas_scene[b], 1)
    res = extract_samples(files, LABELS, tmp_path / "t", class_names=CHIAPAS_NAMES)
    ref = extract_samples(SCENE_1999, LABELS, tmp_path / "t2", class_names=CHIAPAS_NAMES)
    assert res.counts == ref.counts
    assert np.array_equal(open_tree(res.root).read(dtype=np.int16), open_tree(ref.root).read(dtype=np.int16))


# ---------------------------------------------------------------------------
# split_regions


@pytest.mark.parametrize("fraction, seed", [(0.3, 0), (0.5, 1), (0.2, 7)])
def test_split_regions_real_labels(tmp_path, chiapas_labels, fraction, seed):
    split = split_regions(LABELS, tmp_path / "split", test_fraction=fraction, seed=seed)
    train, tprof = read_raster(split.train_reference)
    test, eprof = read_raster(split.test_reference)
    train, test = train[0], test[0]
    with rasterio.open(LABELS) as src:
        assert tprof["transform"] == eprof["transform"] == src.transform
        assert tprof["crs"] == eprof["crs"] == src.crs
        assert train.dtype == test.dtype == np.uint8 and src.dtypes[0] == "uint8"
    labelled = chiapas_labels != 0
    # disjoint, and together exactly the original labels
    assert not np.any((train != 0) & (test != 0))
    assert np.array_equal(np.where(train != 0, train, test), chiapas_labels)
    assert np.array_equal((train != 0) | (test != 0), labelled)
    # no region on both sides
    assert set(split.train_regions).isdisjoint(split.test_regions)
    assert sorted(split.train_regions + split.test_regions) == list(range(1, len(split.table) + 1))
    for code, bbox, rr, cc in independent_regions(chiapas_labels):
        on_train, on_test = train[rr, cc] != 0, test[rr, cc] != 0
        assert on_train.all() or on_test.all(), f"region of code {code} at {bbox} is split"
    assert np.any(test != 0) and np.any(train != 0)
    # every class keeps training pixels; its largest region trains
    for code in CHIAPAS_NAMES:
        assert np.any(train == code)
        sizes = [(len(rr), rr, cc) for c, _, rr, cc in independent_regions(chiapas_labels) if c == code]
        n, rr, cc = max(sizes, key=lambda t: t[0])
        assert np.all(train[rr, cc] == code)
    rows = read_csv_rows(tmp_path / "split" / "regions.csv")
    assert {int(r["region"]) for r in rows if r["side"] == "test"} == set(split.test_regions)


def test_split_regions_is_seeded(tmp_path):
    a = split_regions(LABELS, tmp_path / "a", seed=3)
    b = split_regions(LABELS, tmp_path / "b", seed=3)
    assert a.test_regions == b.test_regions
    assert np.array_equal(read_raster(a.test_reference)[0], read_raster(b.test_reference)[0])


def test_split_regions_synthetic_float_reference(tmp_path):
    """A float reference with nodata -99999: the unlabelled value fills the other side."""
    labels = np.full((20, 20), -99999.0, np.float32)
    labels[1:4, 1:4] = 1
    labels[10:12, 1:4] = 1
    labels[15:19, 15:19] = 1
    labels[1:3, 15:19] = 2
    labels[8:10, 8:10] = 2
    ref = write_raster(tmp_path / "ref.tif", labels, nodata=-99999.0)
    split = split_regions(ref, tmp_path / "s", test_fraction=0.4, seed=0, reference_nodata=-99999)
    train = read_raster(split.train_reference)[0][0]
    test = read_raster(split.test_reference)[0][0]
    lab = labels != -99999
    assert np.array_equal((train != -99999) | (test != -99999), lab)
    assert not np.any((train != -99999) & (test != -99999))
    assert np.array_equal(np.where(train != -99999, train, test), labels)
    assert len(split.table) == 5 and len(split.test_regions) >= 1


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_regions_bad_fraction(tmp_path, fraction):
    with pytest.raises(ParameterError):
        split_regions(LABELS, tmp_path / "s", test_fraction=fraction)


def test_extract_then_open_with_same_grid_check_on_other_date(tmp_path):
    """The 2002 stack shares the grid of the labels: extraction works and values come from 2002."""
    res = extract_samples(SCENE_2002, LABELS, tmp_path / "t2002", class_names=CHIAPAS_NAMES)
    with rasterio.open(SCENE_2002) as src:
        scene = src.read()
    labels = read_raster(LABELS)[0][0]
    tree = open_tree(res.root)
    x = tree.read(dtype=np.int16)[:, :, 0, 0]
    for name, code in (("water", 2), ("urban", 5)):
        got = x[[i for i, s in enumerate(tree.samples) if s.class_name == name]]
        rr, cc = np.nonzero(labels == code)
        expected = scene[:, rr, cc].T
        assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, expected.tolist()))
