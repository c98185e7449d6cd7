"""The geoml-hub command line: every sub-command on small inputs, and its error contract."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from conftest import CHIAPAS_COUNTS, EUROSAT, LABELS, SCENE_1999
from geoml_hub import __version__
from helpers import (assert_png, make_unbalanced_tree, read_csv_rows, read_json, read_raster, run_main, script,
                     write_raster)

CLASS_NAMES_ARG = "1=forest,2=water,3=herbaceous,4=barren,5=urban"


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
    rc, out, err = run_main(["-q", "train", patch_tree, "--out", model, "--model", "cnn", "--epochs", "2",
                             "--batch-size", "16",
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


# ---------------------------------------------------------------------------
# a failed command leaves --out as it was (issue 16, section 3)


def listing(path):
    """``{relative path: bytes}`` of everything under ``path`` (``None`` if it does not exist)."""
    if not path.exists():
        return None
    if path.is_file():
        return path.read_bytes()
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


def corrupt_copy(src, dst, keep=5000):
    """A truncated copy of a GeoTIFF: its header opens, its pixels do not."""
    dst.write_bytes(src.read_bytes()[:keep])
    with rasterio.open(dst) as ds:  # the header is intact
        assert ds.count >= 1
    return dst


def existing_out(tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("from an earlier run")
    return out


@pytest.mark.parametrize("out_exists", [False, True], ids=["new-out", "existing-out"])
def test_pipeline_corrupt_scene_writes_nothing(tmp_path, capsys, data_dir, out_exists):
    corrupt = corrupt_copy(SCENE_1999, tmp_path / "corrupt.tif")
    out = existing_out(tmp_path) if out_exists else tmp_path / "p"
    before = listing(out)
    rc, out_text, err = run_main(["pipeline", "--scene", corrupt, "--reference", LABELS, "--out", out, "--epochs",
                                  "1", "--device", "cpu", "-q"], capsys)
    assert_one_line_error(rc, err, "corrupt.tif", "truncated or corrupt")
    assert listing(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["corrupt.tif", out.name] if out_exists
                                                                else ["corrupt.tif"])


@pytest.mark.parametrize("out_exists", [False, True], ids=["new-out", "existing-out"])
def test_pipeline_bad_epochs_writes_nothing(tmp_path, capsys, data_dir, out_exists):
    out = existing_out(tmp_path) if out_exists else tmp_path / "p"
    before = listing(out)
    rc, _, err = run_main(["-q", "pipeline", EUROSAT, "--out", out, "--epochs", "-1"], capsys)
    assert_one_line_error(rc, err, "--epochs", "1 to 500", "-1")
    assert listing(out) == before
    for argv, fragment in ((["--scene", SCENE_1999, "--reference", LABELS, "--epochs", "-1"], "--epochs"),
                           ([EUROSAT, "--batch-size", "0"], "--batch-size"),
                           ([EUROSAT, "--test-fraction", "1.5"], "--test-fraction"),
                           ([EUROSAT, "--clusters", "0"], "--clusters"),
                           (["--scene", SCENE_1999, "--reference", LABELS, "--stride", "0"], "--stride"),
                           (["--scene", SCENE_1999, "--reference", LABELS, "--patch-size", "2"], "--patch-size")):
        rc, _, err = run_main(["-q", "pipeline", *argv, "--out", out], capsys)
        assert_one_line_error(rc, err, fragment)
        assert listing(out) == before


@pytest.mark.parametrize("which", ["second", "first"])
def test_compare_mismatched_raster_writes_nothing(tmp_path, capsys, data_dir, which):
    with rasterio.open(LABELS) as src:
        profile, data = dict(src.profile), src.read()
    profile.update(width=249)
    narrow = tmp_path / "narrow.tif"
    with rasterio.open(narrow, "w", **profile) as dst:
        dst.write(data[:, :, :249])
    pair = [LABELS, narrow] if which == "second" else [narrow, LABELS]
    out = tmp_path / "cmp"
    rc, _, err = run_main(["-q", "compare", *pair, "--reference", LABELS, "--out", out], capsys)
    assert_one_line_error(rc, err, "narrow.tif", "shape", "classification B" if which == "second"
                          else "classification A")
    assert not out.exists()
    corrupt = corrupt_copy(SCENE_1999, tmp_path / "corrupt.tif")
    rc, _, err = run_main(["-q", "compare", LABELS, corrupt, "--reference", LABELS, "--out", out], capsys)
    assert_one_line_error(rc, err, "corrupt.tif")
    assert not out.exists()
    out = existing_out(tmp_path)
    before = listing(out)
    rc, _, err = run_main(["-q", "compare", *pair, "--reference", LABELS, "--out", out], capsys)
    assert_one_line_error(rc, err, "narrow.tif")
    assert listing(out) == before


def test_validate_corrupt_classification(tmp_path, capsys, data_dir):
    """A classification whose header opens but whose pixels do not: one line, --out untouched."""
    with rasterio.open(LABELS) as src:
        profile, data = dict(src.profile), src.read()
    good = tmp_path / "good.tif"
    with rasterio.open(good, "w", **profile) as dst:
        dst.write(data)
    corrupt = corrupt_copy(good, tmp_path / "corrupt_cls.tif", keep=2000)
    rc, _, err = run_main(["-q", "validate", corrupt, LABELS, "--out", tmp_path / "qc"], capsys)
    assert_one_line_error(rc, err, "corrupt_cls.tif")
    assert not (tmp_path / "qc").exists()


def test_train_failure_removes_what_it_created(tmp_path, capsys, small_files):
    """A corrupt tree: the model's new parent directory does not stay behind."""
    out = tmp_path / "new" / "dir" / "model.pt"
    rc, _, err = run_main(["-q", "train", small_files["bad_tree"], "--out", out, "--epochs", "1"], capsys)
    assert_one_line_error(rc, err, "zz.npy")
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------------
# --out naming something that cannot be the output


OUT_DIR_COMMANDS = {
    "extract": lambda f, m, out: ["extract", SCENE_1999, "--reference", LABELS, "--out", out],
    "balance": lambda f, m, out: ["balance", f["good_tree"], "--out", out],
    "evaluate": lambda f, m, out: ["evaluate", m, f["good_tree"], "--out", out],
    "validate": lambda f, m, out: ["validate", f["ref"], f["ref"], "--out", out],
    "compare": lambda f, m, out: ["compare", f["ref"], f["ref"], "--reference", f["ref"], "--out", out],
    "pipeline": lambda f, m, out: ["pipeline", f["good_tree"], "--out", out, "--epochs", "1"],
    "pipeline-scene": lambda f, m, out: ["pipeline", "--scene", SCENE_1999, "--reference", LABELS, "--out", out],
}
OUT_FILE_COMMANDS = {
    "train": lambda f, m, out: ["train", f["good_tree"], "--out", out, "--epochs", "1"],
    "classify": lambda f, m, out: ["classify", m, SCENE_1999, "--out", out],
}


@pytest.mark.parametrize("command", sorted(OUT_DIR_COMMANDS))
def test_out_is_an_existing_file(tmp_path, capsys, small_files, pixel_model, command):
    out = tmp_path / "taken"
    out.write_text("precious")
    for q in (["-q"], []):
        rc, _, err = run_main(q + OUT_DIR_COMMANDS[command](small_files, pixel_model.model_path, out), capsys)
        assert_one_line_error(rc, err, "--out", "taken", "not a directory")
        assert out.read_text() == "precious"
    rc, _, err = run_main(["-q"] + OUT_DIR_COMMANDS[command](small_files, pixel_model.model_path, out / "sub"),
                          capsys)
    assert_one_line_error(rc, err, "--out", "is a file")
    assert out.read_text() == "precious"


@pytest.mark.parametrize("command", sorted(OUT_FILE_COMMANDS))
def test_out_file_is_a_directory_or_under_a_file(tmp_path, capsys, small_files, pixel_model, command):
    taken = tmp_path / "taken"
    taken.write_text("precious")
    directory = existing_out(tmp_path)
    for out, fragment in ((directory, "is a directory"), (taken / "model.pt", "is a file")):
        rc, _, err = run_main(["-q"] + OUT_FILE_COMMANDS[command](small_files, pixel_model.model_path, out), capsys)
        assert_one_line_error(rc, err, "--out", fragment)
    assert taken.read_text() == "precious"
    assert listing(directory) == {"keep.txt": b"from an earlier run"}


def test_console_script_out_is_a_file(tmp_path):
    out = tmp_path / "taken"
    out.write_text("precious")
    proc = script("balance", EUROSAT, "--out", out)
    assert_one_line_error(proc.returncode, proc.stderr, "--out", "not a directory")
    assert out.read_text() == "precious"


# ---------------------------------------------------------------------------
# -q after the sub-command; help pages


def test_quiet_after_subcommand(tmp_path, capsys, data_dir):
    from geoml_hub.cli import build_parser

    parser = build_parser()
    for argv in (["-q", "balance", "t", "--out", "o"], ["balance", "-q", "t", "--out", "o"],
                 ["balance", "t", "--out", "o", "--quiet"]):
        assert parser.parse_args(argv).quiet is True, argv
    assert parser.parse_args(["balance", "t", "--out", "o"]).quiet is False
    assert parser.parse_args(["wps", "serve", "-q"]).quiet is True
    rc, out, err = run_main(["validate", LABELS, LABELS, "--out", tmp_path / "qc", "-q"], capsys)
    assert rc == 0, err
    assert "overall accuracy 1.000" in out and err == ""
    proc = script("validate", LABELS, LABELS, "--out", tmp_path / "qc2", "-q", check_rc=0)
    assert proc.stderr == ""


def _subparsers(parser, prefix=()):
    import argparse

    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subparsers(sub, prefix + (name,))


def test_every_option_has_help_and_default():
    import argparse

    from geoml_hub.cli import build_parser

    flags = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction, argparse._VersionAction,
             argparse._SubParsersAction)
    pages = list(_subparsers(build_parser()))
    assert len(pages) > 12
    for name, page in pages:
        for action in page._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            label = f"{' '.join(name)} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and len(action.help) > 5, label
            if not isinstance(action, flags) and action.default not in (None, argparse.SUPPRESS):
                assert "default" in action.help.lower(), label
        if name:
            assert page.description, " ".join(name)
    page = dict(pages)
    help_text = " ".join(page[("pipeline",)].format_help().split())
    for option in ("--seed", "--batch-size", "--learning-rate", "--stride", "--reference-nodata"):
        assert option in help_text
    assert "(epochs; 1 to 500; default 60)" in help_text
    assert "samples; 1 to 4096; default 32)" in help_text
    assert "1e-06 to 1.0; default 0.003)" in help_text
    classify = " ".join(page[("classify",)].format_help().split())
    assert "(pixels; 64 to 4096; default 512)" in classify
    for name in ("evaluate", "validate", "compare"):
        text = page[(name,)].format_help()
        assert "--out OUT" in text and page[(name,)].description


def test_top_level_help_is_clean(capsys):
    rc, out, err = run_main(["--help"], capsys)
    assert rc == 0
    assert "``" not in out and "geoml-hub command line" in out
    for command in ("evaluate", "validate", "compare", "pipeline"):
        rc, out, err = run_main([command, "--help"], capsys)
        assert rc == 0 and "``" not in out
        assert "-q, --quiet" in out


# ---------------------------------------------------------------------------
# messages say what is wrong, not what broke inside


def test_crs_message_names_the_option(tmp_path, capsys):
    ref = write_raster(tmp_path / "ref.tif", np.ones((20, 20), np.uint8), nodata=0)
    cls = write_raster(tmp_path / "cls.tif", np.ones((20, 20), np.uint8), crs="EPSG:32616", nodata=255)
    for argv in (["validate", cls, ref, "--out", tmp_path / "qc"],
                 ["compare", ref, cls, "--reference", ref, "--out", tmp_path / "cmp"]):
        rc, _, err = run_main(["-q"] + argv, capsys)
        assert_one_line_error(rc, err, "differ in CRS", "--ignore-crs-name")
    assert not (tmp_path / "qc").exists() and not (tmp_path / "cmp").exists()


def test_messages_do_not_leak_internals(tmp_path, capsys, small_files):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.pt"
    import zipfile

    with zipfile.ZipFile(tmp_path / "whole.pt", "w") as zf:
        zf.writestr("archive/data.pkl", b"x" * 5000)
    truncated.write_bytes((tmp_path / "whole.pt").read_bytes()[:3000])
    tree = small_files["good_tree"]
    short_manifest = tmp_path / "short.csv"
    short_manifest.write_text(f"file,index,class\n{next(tree.glob('a/*'))},,a\n")
    bad_classes = make_unbalanced_tree(tmp_path / "tree", {"a": 3, "b": 3})
    (bad_classes / "classes.json").write_text('{"a": 1, "b": [2]}')
    bad_npy = make_unbalanced_tree(tmp_path / "npytree", {"a": 3, "b": 3})
    (bad_npy / "b" / "zz.npy").write_bytes(b"\x93NUMPY\x01\x00" + b"garbage" * 3)
    not_npy = make_unbalanced_tree(tmp_path / "npytree2", {"a": 3, "b": 3})
    (not_npy / "b" / "zz.npy").write_bytes(b"garbage" * 30)
    cases = [
        (["balance", bad_npy, "--out", tmp_path / "o6"], ("zz.npy", "truncated")),
        (["balance", not_npy, "--out", tmp_path / "o7"], ("zz.npy", "not a NumPy .npy file")),
        (["evaluate", empty, tree, "--out", tmp_path / "o1"], ("empty.pt", "empty")),
        (["evaluate", truncated, tree, "--out", tmp_path / "o2"], ("truncated.pt", "truncated")),
        (["evaluate", small_files["notmodel"], tree, "--out", tmp_path / "o3"], ("notmodel.pt", "not a PyTorch")),
        (["balance", short_manifest, "--out", tmp_path / "o4"], ("short.csv", "line 2", "index")),
        (["balance", bad_classes, "--out", tmp_path / "o5"], ("classes.json", "integer codes")),
    ]
    for argv, fragments in cases:
        rc, _, err = run_main(["-q"] + argv, capsys)
        assert_one_line_error(rc, err, *fragments)
        for leak in ("list index out of range", "NoneType", "int()", "PytorchStreamReader", "enforce fail",
                     "weights_only", "Traceback", "EOF", "magic string"):
            assert leak not in err, (argv, err)
