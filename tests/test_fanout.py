"""Fan-out of classification and QC over row-blocks (geoml_hub.blocks): the block plan, the
blocks over worker processes, the COG assembly and the fused confusion matrix, on the real
Chiapas scene, against one process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from conftest import CHIAPAS_NAMES, LABELS, SCENE_1999
from geoml_hub.blocks import BlockPlan, block_progress, main as block_main, run_block, write_task
from geoml_hub.classification import NODATA, assemble, classify_scene, plan_classification
from geoml_hub.errors import ModelError, ParameterError
from geoml_hub.validation import confusion_counts, fuse_counts, plan_qc, validate_classification

# ---------------------------------------------------------------------------
# the plan

@pytest.mark.parametrize("height,align,n", [(250, 64, 2), (250, 64, 3), (250, 64, 9), (1000, 96, 4), (7, 1, 7),
                                            (10980, 512, 5)])
def test_block_plan_covers_the_rows_once_on_window_boundaries(height, align, n):
    plan = BlockPlan.split(height, 10, align, n)
    rows = plan.rows
    assert plan.n == min(n, -(-height // align)) == len(rows)
    assert rows[0][0] == 0 and rows[-1][1] == height
    for (a, b), (c, _) in zip(rows, rows[1:]):
        assert b == c  # contiguous, no overlap
    assert all(a % align == 0 and b > a for a, b in rows)  # whole windows, never empty
    sizes = [(b - a) // align for a, b in rows[:-1]]
    assert max(sizes, default=0) - min(sizes, default=0) <= 1  # balanced

def test_block_plan_rejects_bad_input():
    with pytest.raises(ParameterError, match="at least 1"):
        BlockPlan.split(100, 100, 64, 0)
    with pytest.raises(ParameterError, match="outside"):
        BlockPlan.split(100, 100, 64, 2).block(2)

# ---------------------------------------------------------------------------
# classification: workers=1 vs blocks over worker processes, real scene

@pytest.fixture(scope="module")
def chiapas_patch_model(tmp_path_factory, data_dir):
    """A small 5x5 patch model trained quickly on the real Chiapas samples."""
    from geoml_hub.extraction import extract_samples
    from geoml_hub.training import train_model

    root = tmp_path_factory.mktemp("chiapas_patch")
    samples = extract_samples(SCENE_1999, LABELS, root / "samples", patch_size=5, class_names=CHIAPAS_NAMES)
    return train_model(samples.root, root / "patch.pt", model="cnn", epochs=2, widths=(8,), seed=0, device="cpu")

def _read(path):
    with rasterio.open(path) as src:
        return src.read(1), src.profile, src.colormap(1), src.tags(), src.overviews(1), src.transform

@pytest.mark.parametrize("kind,stride,method", [("pixel", None, "auto"), ("patch", 2, "patch"),
                                                ("patch", 4, "dense")])
def test_workers_give_the_single_process_classes_pixel_for_pixel(tmp_path, pixel_model, chiapas_patch_model,
                                                                 kind, stride, method):
    model = (pixel_model if kind == "pixel" else chiapas_patch_model).model_path
    one = classify_scene(model, SCENE_1999, tmp_path / "one.tif", stride=stride, tile_size=64, method=method,
                         device="cpu")
    seen = []
    two = classify_scene(model, SCENE_1999, tmp_path / "two.tif", stride=stride, tile_size=64, method=method,
                         device="cpu", workers=2, progress=lambda f, m: seen.append((f, m)))
    a, pa, ca, ta, _, tra = _read(one.path)
    b, pb, cb, tb, ovb, trb = _read(two.path)
    assert np.array_equal(a, b), f"{(a != b).sum()} pixels differ"
    assert (a != NODATA).any() and len(np.unique(a[a != NODATA])) >= 2
    assert tra == trb and pa["crs"] == pb["crs"] and pb["nodata"] == NODATA and pb["dtype"] == "uint8"
    assert ca == cb and ta["CLASS_NAMES"] == tb["CLASS_NAMES"]
    assert json.loads(tb["CLASS_NAMES"]) == {str(c): n for c, n in CHIAPAS_NAMES.items()}
    assert two.counts == one.counts and two.nodata_pixels == one.nodata_pixels and two.stride == one.stride
    assert two.pixels == 250 * 250
    # progress: the sum of the blocks' progress, rising to 1
    fracs = [f for f, _ in seen]
    assert fracs == sorted(fracs) and fracs[-1] == pytest.approx(1.0)
    assert any("blocks done" in m for _, m in seen)

def test_assembled_file_is_a_cloud_optimized_geotiff_with_overviews(tmp_path, pixel_model):
    """The COG driver's layout (tiles, overviews before the full-resolution data); the scene is
    only 250x250, so it is mosaicked 3x3 into a 750x750 scene that has overview levels."""

    with rasterio.open(SCENE_1999) as src:
        data, profile = src.read(), src.profile
    big = np.tile(data, (1, 3, 3))
    scene = tmp_path / "mosaic.tif"
    profile.update(height=750, width=750, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(big)
    one = classify_scene(pixel_model.model_path, scene, tmp_path / "one.tif", device="cpu", tile_size=128)
    two = classify_scene(pixel_model.model_path, scene, tmp_path / "two.tif", device="cpu", tile_size=128, workers=3)
    a, *_ = _read(one.path)
    b, pb, *_, ovb, _ = _read(two.path)
    assert np.array_equal(a, b)
    assert ovb[:1] == [2] and pb["blockxsize"] == 256 and pb["tiled"]
    with rasterio.open(two.path) as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.colorinterp[0].name == "palette"
        # the overview is nearest neighbour: only class codes and nodata
        ov = src.read(1, out_shape=(375, 375))
        assert set(np.unique(ov)) <= set(np.unique(a))

def test_block_files_and_progress(tmp_path, pixel_model):
    task = plan_classification(pixel_model.model_path, SCENE_1999, tmp_path / "blocks", 3, tile_size=64, device="cpu")
    assert json.loads(task.read_text())["plan"] == {"height": 250, "width": 250, "align": 64, "n": 3}
    assert block_progress(task.parent, 3) == 0.0
    first = run_block(task, 0)
    assert first["rows"] == [0, 64] and sum(first["counts"]) + first["nodata_pixels"] == 64 * 250
    assert block_progress(task.parent, 3) == pytest.approx(1 / 3)
    with rasterio.open(task.parent / "block-0000.tif") as src:
        assert (src.height, src.width) == (64, 250)
    with pytest.raises(ParameterError, match="no result"):
        assemble(task, tmp_path / "out.tif")
    assert not (tmp_path / "out.tif").exists()
    # the pod's entry point: the index from JOB_COMPLETION_INDEX
    import os

    os.environ["JOB_COMPLETION_INDEX"] = "1"
    try:
        assert block_main([str(task)]) == 0
    finally:
        del os.environ["JOB_COMPLETION_INDEX"]
    assert block_main([str(task), "2"]) == 0
    assert block_main([str(task), "3"]) == 2  # outside the plan: a one-line error
    res = assemble(task, tmp_path / "out.tif")
    ref = classify_scene(pixel_model.model_path, SCENE_1999, tmp_path / "ref.tif", device="cpu", tile_size=64)
    assert np.array_equal(_read(res.path)[0], _read(ref.path)[0])

def test_fan_out_checks_before_writing(tmp_path, pixel_model, chiapas_scene):
    two_bands = tmp_path / "two.tif"
    with rasterio.open(two_bands, "w", driver="GTiff", width=250, height=250, count=2, dtype="int16") as dst:
        dst.write(chiapas_scene[:2])
    out = tmp_path / "out.tif"
    with pytest.raises(ModelError, match="bands"):
        classify_scene(pixel_model.model_path, two_bands, out, device="cpu", workers=2)
    with pytest.raises(ParameterError, match="workers"):
        classify_scene(pixel_model.model_path, SCENE_1999, out, device="cpu", workers=0)
    assert not out.exists() and not list(tmp_path.glob(".blocks-*"))
    with pytest.raises(ParameterError, match="kind"):
        write_task(tmp_path / "t", "nope", BlockPlan.split(10, 10, 1, 1), {})

# ---------------------------------------------------------------------------
# QC: per-block matrices fused

def test_fused_qc_equals_single_process_qc(tmp_path, pixel_model):
    cls = classify_scene(pixel_model.model_path, SCENE_1999, tmp_path / "c.tif", device="cpu").path
    one = validate_classification(cls, LABELS, tmp_path / "one")
    two = validate_classification(cls, LABELS, tmp_path / "two", workers=3)
    assert one["overall_accuracy"] == two["overall_accuracy"] and one["kappa"] == two["kappa"]
    assert one["n"] == two["n"] > 500 and one["labelled"] == two["labelled"]
    assert (tmp_path / "two" / "report_matrix.csv").read_text() == (tmp_path / "one" / "report_matrix.csv").read_text()
    # the blocks: three row ranges whose matrices add up to the whole
    task = plan_qc(cls, LABELS, tmp_path / "qcblocks", 3)
    for i in range(3):
        run_block(task, i)
    fused = fuse_counts(task)
    whole = confusion_counts(cls, LABELS)
    assert fused.pairs == whole.pairs and fused.labelled == whole.labelled
    parts = [json.loads((task.parent / f"block-000{i}.json").read_text()) for i in range(3)]
    assert [p["rows"] for p in parts] == [[0, 64], [64, 128], [128, 250]]
    assert all(p["labelled"] > 0 for p in parts)


def test_workers_assemble_the_confidence_raster_too(tmp_path, pixel_model):
    one = classify_scene(pixel_model.model_path, SCENE_1999, tmp_path / "one.tif", tile_size=64, device="cpu",
                         confidence=tmp_path / "one-conf.tif")
    two = classify_scene(pixel_model.model_path, SCENE_1999, tmp_path / "two.tif", tile_size=64, device="cpu",
                         confidence=tmp_path / "two-conf.tif", workers=2)
    assert two.confidence == tmp_path / "two-conf.tif" and two.compatibility is not None
    with rasterio.open(one.confidence) as a, rasterio.open(two.confidence) as b:
        ca, cb = a.read(1), b.read(1)
        assert b.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and b.nodata == a.nodata and b.dtypes[0] == "float32"
        assert b.tags()["MEANING"] == a.tags()["MEANING"]
    assert np.array_equal(ca, cb)
    assert np.array_equal(_read(one.path)[0], _read(two.path)[0])
