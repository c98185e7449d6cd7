"""Training-sample trees (GeoTIFF, .npy, .npz), class codes and manifests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import EUROSAT, EUROSAT_COUNTS
from geoml_hub.errors import DataError
from geoml_hub.samples import (MANIFEST_HEADER, SampleSet, load_samples, open_tree, read_container,
                               read_manifest, write_manifest)
from helpers import csv_header, write_npy_tree, write_raster


# ---------------------------------------------------------------------------
# the real EuroSAT GeoTIFF tree


def test_eurosat_tree_layout(data_dir):
    tree = open_tree(EUROSAT)
    assert len(tree) == 269
    assert tree.bands == 13
    assert tuple(tree.patch_size) == (64, 64)
    assert tree.dtype == "uint16"
    assert tree.class_names == sorted(EUROSAT_COUNTS)
    assert dict(tree.classes) == {name: i for i, name in enumerate(sorted(EUROSAT_COUNTS))}
    assert tree.counts() == EUROSAT_COUNTS
    # one sample per GeoTIFF, ordered by class then file name
    assert all(s.index == 0 for s in tree.samples)
    keys = [(s.class_name, s.file.name) for s in tree.samples]
    assert keys == sorted(keys)
    assert len({s.file for s in tree.samples}) == 269
    assert all(s.file.parent.name == s.class_name for s in tree.samples)
    labels = tree.labels()
    assert labels.dtype == np.int64
    assert np.array_equal(np.bincount(labels), [EUROSAT_COUNTS[n] for n in tree.class_names])


def test_eurosat_read_matches_rasterio(data_dir):
    tree = open_tree(EUROSAT)
    positions = [0, 57, 268]
    x = tree.read(positions)
    assert x.shape == (3, 13, 64, 64) and x.dtype == np.float32
    for k, pos in enumerate(positions):
        with rasterio.open(tree.samples[pos].file) as src:
            assert np.array_equal(x[k], src.read().astype(np.float32))
    raw = tree.read([5], dtype=np.uint16)
    assert raw.dtype == np.uint16
    with rasterio.open(tree.samples[5].file) as src:
        assert np.array_equal(raw[0], src.read())


def test_load_samples_dispatches_tree_and_manifest(tmp_path, data_dir):
    tree = load_samples(EUROSAT)
    assert len(tree) == 269
    manifest = write_manifest(tmp_path / "m.csv", tree.subset(range(0, 269, 10)))
    again = load_samples(manifest)
    assert [(s.file, s.index) for s in again.samples] == [(s.file, s.index) for s in tree.samples[::10]]
    with pytest.raises(DataError, match="nowhere"):
        load_samples(tmp_path / "nowhere")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DataError, match="x.txt"):
        load_samples(tmp_path / "x.txt")


# ---------------------------------------------------------------------------
# .npy / .npz trees


def test_npy_tree_counts_shapes_and_values(tmp_path):
    rng = np.random.default_rng(0)
    a1 = rng.normal(size=(5, 3, 2, 4)).astype(np.float32)
    a2 = rng.normal(size=(2, 3, 2, 4)).astype(np.float32)
    b1 = rng.normal(size=(4, 3, 2, 4)).astype(np.float32)
    root = write_npy_tree(tmp_path / "tree", {"water": [b1], "forest": [a1, a2]})
    tree = open_tree(root)
    assert len(tree) == 11
    assert tree.bands == 3 and tuple(tree.patch_size) == (2, 4) and tree.dtype == "float32"
    assert dict(tree.classes) == {"forest": 0, "water": 1}
    assert tree.counts() == {"forest": 7, "water": 4}
    # ordered by class, file, index
    assert [(s.class_name, s.file.name, s.index) for s in tree.samples] == (
        [("forest", "part_00.npy", i) for i in range(5)] + [("forest", "part_01.npy", i) for i in range(2)]
        + [("water", "part_00.npy", i) for i in range(4)])
    x = tree.read()
    assert np.array_equal(x, np.concatenate([a1, a2, b1]))
    assert np.array_equal(tree.read([10, 0, 6]), np.stack([b1[3], a1[0], a2[1]]))
    assert np.array_equal(tree.labels(), [0] * 7 + [1] * 4)


def test_npz_containers(tmp_path):
    rng = np.random.default_rng(1)
    one = rng.normal(size=(3, 2, 1, 1))
    many = rng.normal(size=(4, 2, 1, 1))
    (tmp_path / "t" / "a").mkdir(parents=True)
    (tmp_path / "t" / "b").mkdir(parents=True)
    np.savez(tmp_path / "t" / "a" / "single.npz", whatever=one)  # a single array with any name
    np.savez(tmp_path / "t" / "b" / "named.npz", extra=np.zeros(3), samples=many)  # 'samples' among several
    tree = open_tree(tmp_path / "t")
    assert tree.counts() == {"a": 3, "b": 4}
    assert tree.bands == 2 and tuple(tree.patch_size) == (1, 1)
    assert np.allclose(tree.read(dtype=np.float64), np.concatenate([one, many]))
    assert np.array_equal(read_container(tmp_path / "t" / "b" / "named.npz"), many)


def test_classes_json_codes(tmp_path):
    rng = np.random.default_rng(2)
    spec = {n: [rng.normal(size=(2, 1, 1, 1))] for n in ("alpha", "beta", "gamma")}
    root = write_npy_tree(tmp_path / "t", spec, classes={"alpha": 9, "beta": 2, "gamma": 5, "unused": 1})
    tree = open_tree(root)
    assert dict(tree.classes) == {"beta": 2, "gamma": 5, "alpha": 9}
    assert tree.class_names == ["beta", "gamma", "alpha"]  # ordered by code
    assert np.array_equal(tree.labels(), [2, 2, 0, 0, 1, 1])  # position in class_names


@pytest.mark.parametrize("content, match", [
    ('{"alpha": 1}', "no code"),
    ('{"alpha": 1, "beta": 1}', "not unique"),
    ('{"alpha": "one", "beta": 2}', "integer"),
    ("[1, 2]", "integer"),
    ("not json", "integer"),
])
def test_bad_classes_json(tmp_path, content, match):
    spec = {n: [np.zeros((1, 1, 1, 1))] for n in ("alpha", "beta")}
    root = write_npy_tree(tmp_path / "t", spec)
    (root / "classes.json").write_text(content)
    with pytest.raises(DataError, match=match) as info:
        open_tree(root)
    assert "classes.json" in str(info.value)


# ---------------------------------------------------------------------------
# manifests


def test_manifest_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    root = write_npy_tree(tmp_path / "t", {"a": [rng.normal(size=(4, 2, 3, 3))], "b": [rng.normal(size=(3, 2, 3, 3))]},
                          classes={"a": 10, "b": 20})
    tree = open_tree(root)
    subset = tree.subset([6, 0, 3, 4])
    path = write_manifest(tmp_path / "out" / "manifest.csv", subset)
    assert csv_header(path) == list(MANIFEST_HEADER)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["class"], int(r["code"]), int(r["index"])) for r in rows] == [("b", 20, 2), ("a", 10, 0),
                                                                            ("a", 10, 3), ("b", 20, 0)]
    assert all(Path(r["file"]).is_absolute() for r in rows)
    back = read_manifest(path)
    assert isinstance(back, SampleSet)
    assert [(s.file, s.index, s.class_name) for s in back.samples] == [(s.file, s.index, s.class_name)
                                                                       for s in subset.samples]
    assert dict(back.classes) == {"a": 10, "b": 20}
    assert back.bands == 2 and tuple(back.patch_size) == (3, 3)
    assert np.array_equal(back.read(), subset.read())


def test_manifest_relative_paths_resolve_against_manifest_dir(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    data = {"x": rng.normal(size=(3, 1, 2, 2)), "y": rng.normal(size=(2, 1, 2, 2))}
    base = tmp_path / "project"
    write_npy_tree(base / "tree", {k: [v] for k, v in data.items()})
    manifest = base / "lists" / "manifest.csv"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("file,index,class,code,cluster\n"
                        "../tree/y/part_00.npy,1,y,1,-1\n"
                        "../tree/x/part_00.npy,2,x,0,\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths must not depend on the working directory
    s = read_manifest(manifest)
    assert [s_.file for s_ in s.samples] == [(base / "tree" / "y" / "part_00.npy").resolve(),
                                             (base / "tree" / "x" / "part_00.npy").resolve()]
    assert [s_.cluster for s_ in s.samples] == [-1, -1]
    assert np.allclose(s.read(dtype=np.float64), np.stack([data["y"][1], data["x"][2]]))
    # the relative manifest can be rewritten and read back
    back = read_manifest(write_manifest(tmp_path / "again.csv", s))
    assert [(x.file, x.index) for x in back.samples] == [(x.file, x.index) for x in s.samples]


def _small_tree(tmp_path):
    return write_npy_tree(tmp_path / "t", {"a": [np.zeros((3, 2, 2, 2))], "b": [np.ones((2, 2, 2, 2))]})


@pytest.mark.parametrize("row, match", [
    ("{a},notanint,a,0,-1", "line 3"),
    ("{a},1,a,zero,-1", "line 3"),
    ("{a},1,a,5,-1", "line 3"),  # class a with two codes
    ("{a},1,a,0,clusterX", "line 3"),
])
def test_manifest_bad_rows(tmp_path, row, match):
    root = _small_tree(tmp_path)
    a = root / "a" / "part_00.npy"
    manifest = tmp_path / "bad.csv"
    manifest.write_text("file,index,class,code,cluster\n" + f"{a},0,a,0,-1\n" + row.format(a=a) + "\n")
    with pytest.raises(DataError, match=match) as info:
        read_manifest(manifest)
    assert str(manifest) in str(info.value)


def test_manifest_errors_name_the_file(tmp_path):
    root = _small_tree(tmp_path)
    a = root / "a" / "part_00.npy"
    m = tmp_path / "m.csv"
    with pytest.raises(DataError, match="not found") as info:
        read_manifest(m)
    assert str(m) in str(info.value)
    m.write_text("file,class\nx,a\n")
    with pytest.raises(DataError, match="index") as info:
        read_manifest(m)
    assert str(m) in str(info.value)
    m.write_text("file,index,class\n")
    with pytest.raises(DataError, match="no samples"):
        read_manifest(m)
    m.write_text(f"file,index,class\n{tmp_path / 'gone.npy'},0,a\n")
    with pytest.raises(DataError) as info:
        read_manifest(m)
    assert "gone.npy" in str(info.value) and str(m) in str(info.value)
    m.write_text(f"file,index,class\n{a},3,a\n")  # the file holds 3 samples: 0..2
    with pytest.raises(DataError, match="out of range") as info:
        read_manifest(m)
    assert "part_00.npy" in str(info.value)


# ---------------------------------------------------------------------------
# tree errors: each names the offending file or directory


def test_missing_root(tmp_path):
    with pytest.raises(DataError) as info:
        open_tree(tmp_path / "no_such_tree")
    assert str(tmp_path / "no_such_tree") in str(info.value)


def test_root_without_class_dirs(tmp_path):
    (tmp_path / "flat").mkdir()
    np.save(tmp_path / "flat" / "x.npy", np.zeros((1, 1, 1, 1)))
    with pytest.raises(DataError, match="no class directories") as info:
        open_tree(tmp_path / "flat")
    assert str(tmp_path / "flat") in str(info.value)


def test_empty_class_directory(tmp_path):
    root = _small_tree(tmp_path)
    (root / "c_empty").mkdir()
    (root / "c_empty" / "notes.txt").write_text("not a container")
    with pytest.raises(DataError, match="empty class directory") as info:
        open_tree(root)
    assert "c_empty" in str(info.value)


def test_garbage_geotiff(tmp_path):
    root = tmp_path / "t"
    write_raster(root / "a" / "good.tif", np.zeros((2, 4, 4), np.uint16))
    bad = root / "b" / "broken.tif"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    with pytest.raises(DataError) as info:
        open_tree(root)
    assert str(bad) in str(info.value)


def test_garbage_npy(tmp_path):
    root = _small_tree(tmp_path)
    bad = root / "b" / "zz_garbage.npy"
    bad.write_bytes(b"this is not numpy data at all")
    with pytest.raises(DataError) as info:
        open_tree(root)
    assert "zz_garbage.npy" in str(info.value)


def test_npy_truncated_inside_header(tmp_path):
    root = _small_tree(tmp_path)
    f = root / "b" / "part_00.npy"
    f.write_bytes(f.read_bytes()[:40])
    with pytest.raises(DataError) as info:
        open_tree(root)
    assert str(f.resolve()) in str(info.value)


def _truncate_data(tmp_path):
    root = write_npy_tree(tmp_path / "t", {"a": [np.zeros((10, 2, 4, 4), np.float32)],
                                           "b": [np.ones((10, 2, 4, 4), np.float32)]})
    f = root / "b" / "part_00.npy"
    data = f.read_bytes()
    f.write_bytes(data[:len(data) // 2])  # header intact, half of the samples gone
    return root, f


def test_npy_truncated_data_fails_on_read(tmp_path):
    root, f = _truncate_data(tmp_path)
    with pytest.raises(DataError) as info:
        open_tree(root).read()
    assert str(f.resolve()) in str(info.value)


def test_npy_truncated_data_is_detected_when_opening_the_tree(tmp_path):
    """open_tree is documented to reject corrupt files; a truncated .npy must not pass as 10 samples."""
    root, f = _truncate_data(tmp_path)
    with pytest.raises(DataError) as info:
        open_tree(root)
    assert str(f.resolve()) in str(info.value)


def test_corrupt_npz(tmp_path):
    root = _small_tree(tmp_path)
    bad = root / "b" / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip file")
    with pytest.raises(DataError) as info:
        open_tree(root)
    assert "bad.npz" in str(info.value)


def test_npz_with_several_arrays_and_none_named_samples(tmp_path):
    root = _small_tree(tmp_path)
    bad = root / "b" / "ambiguous.npz"
    np.savez(bad, first=np.zeros((1, 2, 2, 2)), second=np.zeros((1, 2, 2, 2)))
    with pytest.raises(DataError, match="samples") as info:
        open_tree(root)
    assert "ambiguous.npz" in str(info.value)
    with pytest.raises(DataError) as info:
        read_container(bad)
    assert "ambiguous.npz" in str(info.value)


def test_npy_with_wrong_rank(tmp_path):
    root = _small_tree(tmp_path)
    np.save(root / "b" / "flat.npy", np.zeros((3, 4)))
    with pytest.raises(DataError, match="shape") as info:
        open_tree(root)
    assert "flat.npy" in str(info.value)


def test_inconsistent_band_count(tmp_path):
    root = _small_tree(tmp_path)
    np.save(root / "b" / "three_bands.npy", np.zeros((2, 3, 2, 2)))
    with pytest.raises(DataError, match="bands") as info:
        open_tree(root)
    assert "three_bands.npy" in str(info.value)


def test_inconsistent_patch_size(tmp_path):
    root = _small_tree(tmp_path)
    np.save(root / "b" / "bigger.npy", np.zeros((2, 2, 3, 3)))
    with pytest.raises(DataError, match="patch size") as info:
        open_tree(root)
    assert "bigger.npy" in str(info.value)


def test_geotiff_tree_inconsistent_bands_and_size(tmp_path):
    root = tmp_path / "t"
    write_raster(root / "a" / "p1.tif", np.zeros((3, 8, 8), np.uint16))
    write_raster(root / "b" / "p2.tif", np.zeros((4, 8, 8), np.uint16))
    with pytest.raises(DataError, match="bands") as info:
        open_tree(root)
    assert "p2.tif" in str(info.value)
    (root / "b" / "p2.tif").unlink()
    write_raster(root / "b" / "p3.tif", np.zeros((3, 8, 9), np.uint16))
    with pytest.raises(DataError, match="patch size") as info:
        open_tree(root)
    assert "p3.tif" in str(info.value)


def test_geotiff_tree_ok(tmp_path):
    root = tmp_path / "t"
    arrays = {}
    for k, name in enumerate(("zeta", "eta")):
        for j in range(2):
            arr = (np.arange(3 * 5 * 5, dtype=np.uint16).reshape(3, 5, 5) + 100 * k + 10 * j)
            arrays[(name, j)] = arr
            write_raster(root / name / f"{name}_{j}.tif", arr)
    tree = open_tree(root)
    assert dict(tree.classes) == {"eta": 0, "zeta": 1}
    assert tree.bands == 3 and tuple(tree.patch_size) == (5, 5) and tree.dtype == "uint16"
    x = tree.read(dtype=np.uint16)
    expected = [arrays[("eta", 0)], arrays[("eta", 1)], arrays[("zeta", 0)], arrays[("zeta", 1)]]
    assert np.array_equal(x, np.stack(expected))


def test_read_detects_container_changed_after_opening(tmp_path):
    root = _small_tree(tmp_path)
    tree = open_tree(root)
    np.save(root / "a" / "part_00.npy", np.zeros((1, 2, 2, 2)))  # now holds 1 sample, the set expects 3
    with pytest.raises(DataError, match="out of range") as info:
        tree.read()
    assert "part_00.npy" in str(info.value)

