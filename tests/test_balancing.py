"""Cluster-based balancing (ISDCT Geoportal algorithm) and its guarantees."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import EUROSAT
from geoml_hub.balancing import balance_samples, compute_features
from geoml_hub.errors import ParameterError
from geoml_hub.samples import MANIFEST_HEADER, open_tree, read_manifest
from helpers import assert_png, csv_header, make_unbalanced_tree, read_csv_rows, read_json


def class_ratio(counts):
    counts = [c for c in counts if c > 0]
    return max(counts) / min(counts)


def check_guarantees(result, sample_set, threshold=None, step=None):
    """Check every promise of balance_samples against an independent recomputation."""
    summary = result.summary
    names = np.array([s.class_name for s in sample_set.samples])
    before = {n: int((names == n).sum()) for n in sample_set.class_names if (names == n).any()}
    rarest = min(before.values())
    after = {}
    assert result.keep.shape == (len(sample_set),) and result.keep.dtype == bool
    assert result.clusters.shape == (len(sample_set),)
    for name, n_before in before.items():
        cs = summary["classes"][name]
        assert cs["before"] == n_before
        thr, s_eff = cs["threshold"], cs["step"]
        if threshold is not None:
            assert thr == threshold
        assert s_eff >= 1
        members = np.flatnonzero(names == name)
        sizes = [c["before"] for c in cs["clusters"]]
        assert sizes == sorted(sizes), "clusters must be listed by ascending size"
        assert sum(sizes) == n_before
        seen = set()
        for c in cs["clusters"]:
            m = members[result.clusters[members] == c["cluster"]]  # the cluster's members in list order
            assert len(m) == c["before"] and c["cluster"] not in seen
            seen.add(c["cluster"])
            kept = np.flatnonzero(result.keep[m])
            if len(m) < thr:
                assert kept.tolist() == list(range(len(m))), "a cluster below the threshold is kept whole"
            else:
                assert kept.tolist() == list(range(0, len(m), s_eff)), "thinning keeps positions 0, step, 2*step..."
                assert len(kept) == math.ceil(len(m) / s_eff)
            assert c["after"] == len(kept)
        assert seen == set(np.unique(result.clusters[members]).tolist())
        n_after = int(result.keep[members].sum())
        assert cs["after"] == n_after
        assert n_after >= min(n_before, rarest), "no class is thinned below the rarest class"
        if step is not None:
            assert s_eff <= step
            kept_at_requested = sum(s if s < thr else math.ceil(s / step) for s in sizes)
            if kept_at_requested >= min(n_before, rarest):  # floor rule not binding
                assert s_eff == step
            else:  # floor binding: the largest step that still keeps the floor
                assert sum(s if s < thr else math.ceil(s / (s_eff + 1)) for s in sizes) < min(n_before, rarest)
        after[name] = n_after
    assert summary["total_before"] == len(sample_set)
    assert summary["total_after"] == int(result.keep.sum()) == sum(after.values())
    assert summary["ratio_before"] == pytest.approx(class_ratio(before.values()))
    assert summary["ratio_after"] == pytest.approx(class_ratio(after.values()))
    assert class_ratio(after.values()) <= class_ratio(before.values()) + 1e-12, "the max/min class ratio grew"
    # the selection is the kept samples
    selected = result.selected()
    assert len(selected) == int(result.keep.sum())
    kept_keys = {(s.file, s.index) for s, k in zip(sample_set.samples, result.keep) if k}
    assert {(s.file, s.index) for s in selected.samples} == kept_keys
    return before, after


# ---------------------------------------------------------------------------
# features


def test_compute_features_eurosat_matches_numpy(data_dir):
    tree = open_tree(EUROSAT)
    sub = tree.subset(list(range(0, 269, 7)))
    feats = compute_features(sub)
    x = sub.read(dtype=np.float64).reshape(len(sub), 13, -1)
    assert feats.shape == (len(sub), 26) and feats.dtype == np.float64
    assert np.allclose(feats[:, :13], x.mean(axis=2), rtol=1e-12)
    assert np.allclose(feats[:, 13:], x.std(axis=2), rtol=1e-10)


def test_compute_features_large_npy_shuffled_order_and_progress(tmp_path):
    """More samples than one chunk (256), samples in shuffled order, several files."""
    rng = np.random.default_rng(5)
    big = rng.normal(50, 10, size=(600, 2, 3, 3)).astype(np.float32)
    small = rng.normal(-5, 2, size=(7, 2, 3, 3)).astype(np.float32)
    from helpers import write_npy_tree

    root = write_npy_tree(tmp_path / "t", {"a": [big], "b": [small]})
    tree = open_tree(root)
    order = rng.permutation(len(tree))
    sub = tree.subset(order)
    calls = []
    feats = compute_features(sub, progress=lambda f, m: calls.append((f, m)))
    x = np.concatenate([big, small]).astype(np.float64)[order].reshape(len(order), 2, -1)
    assert np.allclose(feats[:, :2], x.mean(axis=2))
    assert np.allclose(feats[:, 2:], x.std(axis=2))
    assert calls and all(0.0 <= f <= 1.0 for f, _ in calls) and calls[-1][0] == 1.0
    assert all(isinstance(m, str) for _, m in calls)


# ---------------------------------------------------------------------------
# guarantees on the real EuroSAT tree


@pytest.mark.parametrize("kwargs", [
    {},
    {"threshold": 3, "step": 3},
    {"threshold": 2, "step": 10, "n_clusters": 3},
])
def test_balance_eurosat_guarantees(data_dir, kwargs):
    tree = open_tree(EUROSAT)
    result = balance_samples(tree, seed=0, **kwargs)
    before, after = check_guarantees(result, tree, kwargs.get("threshold"), kwargs.get("step"))
    assert min(after.values()) == 20  # Pasture, the rarest class, is never thinned
    assert after["Pasture"] == 20
    assert result.features.shape == (269, 26)
    for name, cs in result.summary["classes"].items():
        assert cs["code"] == tree.classes[name]
        assert cs["step_requested"] == kwargs.get("step")


def test_balance_eurosat_thins_large_classes(data_dir):
    """With a small threshold and a step, classes above the rarest size are actually thinned."""
    tree = open_tree(EUROSAT)
    result = balance_samples(tree, threshold=8, step=2, seed=1)
    _, after = check_guarantees(result, tree, 8, 2)
    assert result.summary["total_after"] < 269
    assert result.summary["ratio_after"] < result.summary["ratio_before"]
    assert all(v >= 20 for v in after.values())
    thinned = [n for n, c in result.summary["classes"].items() if c["after"] < c["before"]]
    assert thinned and all(result.summary["classes"][n]["step"] == 2 for n in thinned)


# ---------------------------------------------------------------------------
# synthetic unbalanced trees


UNBALANCED = {"a_common": 120, "b_mid": 45, "c_rare": 9, "d_mid": 30}


@pytest.mark.parametrize("kwargs", [
    {},
    {"threshold": 5, "step": 4},
    {"threshold": 2, "step": 50},  # floor rule binding
    {"threshold": 1000, "step": 3},  # every cluster below the threshold
    {"step": 2, "n_clusters": 4},
    {"target": 20},
    {"target": 1},  # below the rarest class: raised to it
    {"threshold": 4, "step": 3, "per_class": False},
    {"per_class": False, "n_clusters": 6, "target": 15},
    {"threshold": 3, "step": 1},
])
def test_balance_synthetic_guarantees(tmp_path, kwargs):
    root = make_unbalanced_tree(tmp_path / "t", UNBALANCED, seed=11)
    tree = open_tree(root)
    result = balance_samples(tree, seed=3, **kwargs)
    before, after = check_guarantees(result, tree, kwargs.get("threshold"), kwargs.get("step"))
    assert after["c_rare"] == 9
    params = result.summary["parameters"]
    assert params["per_class"] == kwargs.get("per_class", True)
    assert params["seed"] == 3
    if "target" in kwargs:
        assert params["target_effective"] == max(kwargs["target"], 9)
    if kwargs.get("n_clusters") and kwargs.get("per_class", True):
        for name in before:
            assert len(result.summary["classes"][name]["clusters"]) <= kwargs["n_clusters"]
    if kwargs.get("per_class", True):
        # cluster ids are unique over the whole set: one class per cluster
        for cid in np.unique(result.clusters):
            assert len({tree.samples[i].class_name for i in np.flatnonzero(result.clusters == cid)}) == 1


def test_global_clusters_span_classes(tmp_path):
    """per_class=False clusters all samples together; selection still runs per class."""
    root = make_unbalanced_tree(tmp_path / "t", {"p": 40, "q": 40, "r": 12}, seed=2)
    tree = open_tree(root)
    result = balance_samples(tree, per_class=False, n_clusters=5, threshold=3, step=2, seed=0)
    check_guarantees(result, tree, 3, 2)
    assert set(np.unique(result.clusters).tolist()) <= set(range(5))


def test_requested_step_used_when_floor_not_binding(tmp_path):
    root = make_unbalanced_tree(tmp_path / "t", {"big": 100, "small": 10}, seed=4)
    tree = open_tree(root)
    result = balance_samples(tree, threshold=2, step=3, n_clusters=2, seed=0)
    check_guarantees(result, tree, 2, 3)
    assert result.summary["classes"]["big"]["step"] == 3
    assert result.summary["classes"]["big"]["after"] < 100


def test_floor_rule_lowers_the_step(tmp_path):
    """The docs' example: step 10 would keep 2 of 11 and 1 of 10; the floor keeps the rarest whole."""
    root = make_unbalanced_tree(tmp_path / "t", {"eleven": 11, "ten": 10}, seed=8)
    tree = open_tree(root)
    result = balance_samples(tree, threshold=1, step=10, n_clusters=1, seed=0)
    check_guarantees(result, tree, 1, 10)
    classes = result.summary["classes"]
    assert classes["ten"]["after"] == 10 and classes["ten"]["step"] == 1
    assert classes["eleven"]["after"] >= 10
    assert result.summary["ratio_after"] <= 1.1 + 1e-12


def test_same_seed_same_manifest_bytes(tmp_path):
    root = make_unbalanced_tree(tmp_path / "t", UNBALANCED, seed=12)
    tree = open_tree(root)
    a = balance_samples(tree, threshold=3, step=3, seed=7).write(tmp_path / "a")
    b = balance_samples(open_tree(root), threshold=3, step=3, seed=7).write(tmp_path / "b", plot=False)
    assert a["manifest"].read_bytes() == b["manifest"].read_bytes()
    assert "plot" not in b and not (tmp_path / "b" / "clusters.png").exists()


def test_write_outputs(tmp_path):
    root = make_unbalanced_tree(tmp_path / "t", UNBALANCED, seed=13)
    tree = open_tree(root)
    result = balance_samples(tree, threshold=4, step=3, seed=0)
    paths = result.write(tmp_path / "out")
    out = tmp_path / "out"
    assert paths["manifest"] == out / "manifest.csv"
    assert csv_header(out / "manifest.csv") == list(MANIFEST_HEADER) == ["file", "index", "class", "code", "cluster"]
    rows = read_csv_rows(out / "manifest.csv")
    assert len(rows) == result.summary["total_after"]
    lookup = {(s.file, s.index): (s, int(c)) for s, c in zip(tree.samples, result.clusters)}
    kept = {(s.file, s.index) for s, k in zip(tree.samples, result.keep) if k}
    from pathlib import Path

    got = set()
    for r in rows:
        key = (Path(r["file"]), int(r["index"]))
        s, cluster = lookup[key]
        assert r["class"] == s.class_name and int(r["code"]) == tree.classes[s.class_name]
        assert int(r["cluster"]) == cluster
        got.add(key)
    assert got == kept
    # manifest rows: by class, then by clusters in ascending size
    for name, cs in result.summary["classes"].items():
        class_rows = [int(r["cluster"]) for r in rows if r["class"] == name]
        expected = [c["cluster"] for c in cs["clusters"] for _ in range(c["after"])]
        assert class_rows == expected
    summary = read_json(out / "summary.json")
    assert "_order" not in summary
    for key in ("algorithm", "parameters", "total_before", "total_after", "ratio_before", "ratio_after", "classes"):
        assert key in summary
    assert summary["classes"]["c_rare"]["after"] == 9
    assert_png(out / "clusters.png")
    # the manifest reads back as the selection
    back = read_manifest(out / "manifest.csv")
    assert len(back) == result.summary["total_after"]
    assert dict(back.classes) == dict(tree.classes)
    assert np.array_equal(back.read(), result.selected().read())


def test_progress_fractions(tmp_path):
    root = make_unbalanced_tree(tmp_path / "t", UNBALANCED, seed=14)
    calls = []
    balance_samples(open_tree(root), progress=lambda f, m: calls.append(f), seed=0)
    assert len(calls) >= 3
    assert all(0.0 <= f <= 1.0 for f in calls)
    assert calls[-1] == 1.0
    assert all(b >= a for a, b in zip(calls, calls[1:])), "progress went backwards"


@pytest.mark.parametrize("name", ["threshold", "step", "target", "n_clusters"])
def test_parameters_below_one(tmp_path, name):
    root = make_unbalanced_tree(tmp_path / "t", {"a": 5, "b": 5}, seed=0)
    with pytest.raises(ParameterError):
        balance_samples(open_tree(root), **{name: 0})


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.uint8, np.int8])
def test_compute_features_integer_sums_equal_two_pass_float64(tmp_path, dtype):
    """The integer sum / sum-of-squares path gives the two-pass float64 mean and std (1e-9 relative),
    over several read chunks, a shuffled subset (copies) and a contiguous one (views), including
    constant patches at the dtype's extremes (std exactly 0)."""
    from geoml_hub import balancing
    from helpers import write_npy_tree

    info = np.iinfo(dtype)
    rng = np.random.default_rng(11)
    n = balancing.FEATURE_CHUNK + 77
    big = rng.integers(info.min, info.max, size=(n, 3, 16, 16), endpoint=True).astype(dtype)
    big[5] = info.max
    big[6] = info.min
    big[7, 1] = info.max
    root = write_npy_tree(tmp_path / "t", {"a": [big]})
    tree = open_tree(root)
    x = big.astype(np.float64).reshape(n, 3, -1)
    expected = np.concatenate([x.mean(axis=2), x.std(axis=2)], axis=1)
    for sub, rows in ((tree, np.arange(n)), (tree.subset(rng.permutation(n)), None)):
        rows = np.array([s.index for s in sub.samples]) if rows is None else rows
        feats = compute_features(sub)
        assert np.allclose(feats, expected[rows], rtol=1e-9, atol=0)
        assert np.all(feats[rows == 5][:, 3:] == 0) and np.all(feats[rows == 6][:, 3:] == 0)
