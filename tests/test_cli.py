"""The geoml-hub command line: every sub-command on small inputs, and its error contract."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from conftest import CHIAPAS_COUNTS, LABELS, SCENE_1999
from geoml_hub import __version__
from geoml_hub.cli import main
from helpers import (assert_png, make_unbalanced_tree, read_csv_rows, read_json, read_raster, script,
                     write_raster)

CLASS_NAMES_ARG = "1=forest,2=water,3=herbaceous,4=barren,5=urban"


def run_main(argv, capsys):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *fragments):
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("geoml-hub: error:"), err
    for f in fragments:
        assert str(f) in lines[0], (f, lines[0])


# ---------------------------------------------------------------------------
# the installed console script


def test_console_script_version():
    proc = script("--version", check_rc=0)
    assert proc.stdout.strip() == f"geoml-hub {__version__}"


def test_console_script_balance_and_error(tmp_path):
    root = make_unbalanced_tree(tmp_path / "tree", {"a": 30, "b": 8}, seed=1)
    proc = script("balance", root, "--out", tmp_path / "bal", "--threshold", "3", "--step", "2", check_rc=0)
    assert "kept" in proc.stdout and "manifest.csv" in proc.stdout
    summary = read_json(tmp_path / "bal" / "summary.json")
    assert summary["parameters"]["threshold"] == 3 and summary["parameters"]["step"] == 2
    assert summary["classes"]["b"]["after"] == 8  # the rarest class is kept whole
    assert summary["ratio_after"] <= summary["ratio_before"]
    assert len(read_csv_rows(tmp_path / "bal" / "manifest.csv")) == summary["total_after"]
    assert_png(tmp_path / "bal" / "clusters.png")
    proc = script("-q", "balance", tmp_path / "missing_tree", "--out", tmp_path / "x")
    assert_one_line_error(proc.returncode, proc.stderr, "missing_tree")
    assert proc.stdout == ""
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------
# every sub-command


def test_extract(tmp_path, capsys, data_dir):
    rc, out, err = run_main(["-q", "extract", SCENE_1999, "--reference", LABELS, "--out", tmp_path / "s",
                             "--class-names", CLASS_NAMES_ARG], capsys)
    assert rc == 0, err
    assert "718 samples" in out
    assert read_json(tmp_path / "s" / "classes.json") == {"forest": 1, "water": 2, "herbaceous": 3, "barren": 4,
                                                          "urban": 5}
    for name, n in CHIAPAS_COUNTS.items():
        assert sum(np.load(f).shape[0] for f in (tmp_path / "s" / name).glob("*.npy")) == n
    rc, out, err = run_main(["-q", "extract", SCENE_1999, "--reference", LABELS, "--out", tmp_path / "s3",
                             "--patch-size", "3"], capsys)
    assert rc == 0, err
    arr = np.load(next((tmp_path / "s3" / "2").glob("*.npy")))
    assert arr.shape[1:] == (8, 3, 3)


def test_balance(tmp_path, capsys):
    root = make_unbalanced_tree(tmp_path / "tree", {"a": 60, "b": 20, "c": 10}, seed=2)
    rc, out, err = run_main(["-q", "balance", root, "--out", tmp_path / "b", "--threshold", "3", "--step", "3",
                             "--clusters", "4", "--seed", "5"], capsys)
    assert rc == 0, err
    s = read_json(tmp_path / "b" / "summary.json")
    assert s["parameters"] == {**s["parameters"], "threshold": 3, "step": 3, "clusters": 4, "seed": 5,
                               "per_class": True}
    assert f"{s['total_after']} of 90" in out
    rc, out, err = run_main(["-q", "balance", root, "--out", tmp_path / "g", "--global-clusters", "--target", "15"],
                            capsys)
    assert rc == 0, err
    s = read_json(tmp_path / "g" / "summary.json")
    assert s["parameters"]["per_class"] is False and s["parameters"]["target"] == 15
    assert s["ratio_after"] <= s["ratio_before"]


def test_train_evaluate(tmp_path, capsys, patch_tree):
    model = tmp_path / "m" / "model.pt"
    rc, out, err = run_main(["-q", "train", patch_tree, "--out", model, "--epochs", "2", "--batch-size", "16",
                             "--device", "cpu", "--bands", "1,3", "--no-augment", "--seed", "3"], capsys)
    assert rc == 0, err
    assert model.is_file() and (tmp_path / "m" / "model.history.csv").is_file()
    assert_png(tmp_path / "m" / "model.curves.png")
    assert "best epoch" in out
    payload = torch.load(model, weights_only=True)
    assert payload["bands"] == [1, 3]
    assert payload["hyperparameters"]["augment"] is False and payload["hyperparameters"]["seed"] == 3
    assert payload["hyperparameters"]["epochs"] == 2
    rc, out, err = run_main(["-q", "evaluate", model, patch_tree, "--out", tmp_path / "qc", "--device", "cpu"], capsys)
    assert rc == 0, err
    s = read_json(tmp_path / "qc" / "summary.json")
    assert s["n"] == 48
    assert f"overall accuracy {s['overall_accuracy']:5.3f}" in out
    assert len(read_csv_rows(tmp_path / "qc" / "predictions.csv")) == 48


def test_classify_validate_compare(tmp_path, capsys, pixel_model):
    out_a = tmp_path / "a.tif"
    rc, out, err = run_main(["-q", "classify", pixel_model.model_path, SCENE_1999, "--out", out_a, "--tile-size", "100",
                             "--device", "cpu"], capsys)
    assert rc == 0, err
    assert "62500 pixels" in out
    cls, prof = read_raster(out_a)
    assert cls.dtype == np.uint8 and cls.shape == (1, 250, 250) and prof["nodata"] == 255
    rc, out, err = run_main(["-q", "validate", out_a, LABELS, "--out", tmp_path / "qc"], capsys)
    assert rc == 0, err
    s = read_json(tmp_path / "qc" / "summary.json")
    assert s["n"] == 718 and s["classes"] == ["forest", "water", "herbaceous", "barren", "urban"]
    assert f"overall accuracy {s['overall_accuracy']:5.3f}" in out
    # a second version: the same classification with a block set to one class
    data = cls.copy()
    data[0, :125, :] = 1
    with rasterio.open(out_a) as src:
        profile = dict(src.profile)
    out_b = tmp_path / "b.tif"
    with rasterio.open(out_b, "w", **profile) as dst:
        dst.write(data)
    rc, out, err = run_main(["-q", "compare", out_a, out_b, "--reference", LABELS, "--out", tmp_path / "cmp",
                             "--names", "full,damaged"], capsys)
    assert rc == 0, err
    cmp_summary = read_json(tmp_path / "cmp" / "summary.json")
    a = read_json(tmp_path / "cmp" / "full" / "summary.json")
    b = read_json(tmp_path / "cmp" / "damaged" / "summary.json")
    expected = "full" if (a["overall_accuracy"], a["kappa"]) > (b["overall_accuracy"], b["kappa"]) else "damaged"
    assert cmp_summary["better"] == expected
    assert f"better: {expected}" in out
    assert (tmp_path / "cmp" / "comparison.csv").is_file()


def test_pipeline_small_tree(tmp_path, capsys, patch_tree):
    rc, out, err = run_main(["-q", "pipeline", patch_tree, "--out", tmp_path / "p", "--epochs", "2", "--device",
                             "cpu", "--test-fraction", "0.25"], capsys)
    assert rc == 0, err
    s = read_json(tmp_path / "p" / "summary.json")
    assert s["n_test"] == 12 and s["n_train"] == 36 and s["qc"]["n"] == 12
    assert "patch pipeline" in out and "QC on held-out data" in out


# ---------------------------------------------------------------------------
# bad input: exit status 2, one line on stderr, no traceback


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_bad")
    ref = write_raster(d / "ref.tif", np.ones((20, 20), np.uint8), nodata=0)
    cls = write_raster(d / "cls.tif", np.ones((20, 21), np.uint8), nodata=255)
    four = write_raster(d / "four.tif", np.ones((4, 12, 12), np.float32))
    notmodel = d / "notmodel.pt"
    notmodel.write_text("not a model")
    good_tree = make_unbalanced_tree(d / "goodtree", {"a": 5, "b": 5})
    bad_tree = make_unbalanced_tree(d / "badtree", {"a": 5, "b": 5})
    (bad_tree / "b" / "zz.npy").write_bytes(b"garbage")
    return {"ref": ref, "cls": cls, "four": four, "notmodel": notmodel, "bad_tree": bad_tree, "good_tree": good_tree,
            "dir": d}


BAD_COMMANDS = [
    ("missing tree", lambda f, m: ["balance", f["dir"] / "nope", "--out", f["dir"] / "o1"], "nope"),
    ("step 0", lambda f, m: ["balance", f["good_tree"], "--out", f["dir"] / "o2", "--step", "0"],
     "step"),
    ("corrupt tree", lambda f, m: ["train", f["bad_tree"], "--out", f["dir"] / "m.pt", "--epochs", "1"], "zz.npy"),
    ("epochs 0", lambda f, m: ["train", f["dir"] / "nope", "--out", f["dir"] / "m.pt", "--epochs", "0"], "epochs"),
    ("even patch", lambda f, m: ["extract", SCENE_1999, "--reference", LABELS, "--out", f["dir"] / "o3",
                                 "--patch-size", "2"], "patch size"),
    ("extract grid", lambda f, m: ["extract", SCENE_1999, "--reference", f["ref"], "--out", f["dir"] / "o4"],
     "shape"),
    ("band mismatch", lambda f, m: ["classify", m, f["four"], "--out", f["dir"] / "o5.tif"], "four.tif"),
    ("bad band map", lambda f, m: ["classify", m, f["four"], "--out", f["dir"] / "o6.tif", "--band-map", "a,b"],
     "a,b"),
    ("not a model", lambda f, m: ["evaluate", f["notmodel"], f["bad_tree"], "--out", f["dir"] / "o7"], "notmodel.pt"),
    ("validate grid", lambda f, m: ["validate", f["cls"], f["ref"], "--out", f["dir"] / "o8"], "shape"),
    ("validate missing", lambda f, m: ["validate", f["dir"] / "gone.tif", f["ref"], "--out", f["dir"] / "o9"],
     "gone.tif"),
    ("compare names", lambda f, m: ["compare", f["cls"], f["cls"], "--reference", f["ref"], "--out", f["dir"] / "o10",
                                    "--names", "onlyone"], "--names"),
    ("pipeline nothing", lambda f, m: ["pipeline", "--out", f["dir"] / "o11"], "pipeline"),
    ("pipeline no reference", lambda f, m: ["pipeline", "--scene", SCENE_1999, "--out", f["dir"] / "o12"],
     "--reference"),
    ("reference nodata not a number", lambda f, m: ["validate", f["cls"], f["ref"], "--out", f["dir"] / "o13",
                                                    "--reference-nodata", "abc"], "abc"),
    ("class names code not a number", lambda f, m: ["extract", SCENE_1999, "--reference", LABELS, "--out",
                                                    f["dir"] / "o14", "--class-names", "1=forest,x=water"], "x"),
    ("class names without =", lambda f, m: ["extract", SCENE_1999, "--reference", LABELS, "--out", f["dir"] / "o15",
                                            "--class-names", "forest"], "CODE=NAME"),
]


@pytest.mark.parametrize("label, make_args, fragment", BAD_COMMANDS, ids=[b[0] for b in BAD_COMMANDS])
def test_bad_input_one_line_exit_2(capsys, small_files, pixel_model, label, make_args, fragment):
    argv = ["-q"] + make_args(small_files, pixel_model.model_path)
    rc, out, err = run_main(argv, capsys)
    assert_one_line_error(rc, err, fragment)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_gpu(tmp_path, capsys, patch_tree):
    rc, out, err = run_main(["-q", "train", patch_tree, "--out", tmp_path / "m.pt", "--device", "cuda"], capsys)
    assert_one_line_error(rc, err, "cuda")
    assert not (tmp_path / "m.pt").exists()
