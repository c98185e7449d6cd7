"""Training polygons (GeoJSON, as the web map saves them) burnt into labels on a scene's grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from conftest import CHIAPAS_COUNTS, CHIAPAS_NAMES, SCENE_1999
from geoml_hub.errors import DataError
from geoml_hub.extraction import extract_samples
from geoml_hub.polygons import class_codes, rasterize_polygons
from helpers import chiapas_polygons


def test_polygons_reproduce_the_reference_labels(tmp_path):
    original, n = chiapas_polygons(tmp_path / "polygons.geojson")
    res = rasterize_polygons(tmp_path / "polygons.geojson", SCENE_1999, tmp_path / "labels.tif")
    assert res.features == n and res.class_names == CHIAPAS_NAMES
    with rasterio.open(res.path) as dst, rasterio.open(SCENE_1999) as scene:
        burnt = dst.read(1)
        assert (dst.crs, dst.transform, dst.shape) == (scene.crs, scene.transform, scene.shape)
        assert dst.nodata == 0 and dst.dtypes[0] == "uint16"
    # the round trip through longitude/latitude keeps every labelled pixel's centre inside its polygon
    assert np.array_equal(burnt, original)
    assert res.pixels == CHIAPAS_COUNTS
    # and extraction from it gives the same samples as from the label raster
    tree = extract_samples(SCENE_1999, res.path, tmp_path / "samples", 1, 0, res.class_names)
    assert tree.counts == CHIAPAS_COUNTS


def test_class_names_without_codes_get_codes_in_order(tmp_path):
    chiapas_polygons(tmp_path / "p.geojson", with_codes=False)
    res = rasterize_polygons(tmp_path / "p.geojson", SCENE_1999, tmp_path / "labels.tif")
    assert sorted(res.class_names.values()) == sorted(CHIAPAS_NAMES.values())
    assert res.pixels == CHIAPAS_COUNTS
    assert class_codes([{"properties": {"class": "a"}}, {"properties": {"class": "b", "code": 1}}]) == {"b": 1, "a": 2}


@pytest.mark.parametrize("content, message", [
    ("{", "not a readable GeoJSON"),
    (json.dumps({"type": "Feature"}), "expected a GeoJSON FeatureCollection"),
    (json.dumps({"type": "FeatureCollection", "features": []}), "no polygons"),
    (json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"class": "x"}, "geometry": {"type": "Point", "coordinates": [0, 0]}}]}),
     "feature 1 is a Point"),
    (json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0],
                                                                                              [1, 1], [0, 0]]]}}]}),
     "feature 1 has no 'class'"),
    (json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"class": "x", "code": 0},
         "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}]}),
     "code must be an integer from 1 to 65535"),
    (json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"class": "far away"},
         "geometry": {"type": "Polygon", "coordinates": [[[10, 50], [10.1, 50], [10.1, 50.1], [10, 50]]]}}]}),
     "no polygon covers a pixel centre"),
])
def test_bad_polygons_are_one_clear_error_and_nothing_is_written(tmp_path, content, message):
    path = tmp_path / "p.geojson"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        rasterize_polygons(path, SCENE_1999, tmp_path / "labels.tif")
    assert list(tmp_path.iterdir()) == [path]


def test_two_codes_for_one_class_are_refused():
    with pytest.raises(DataError, match="class 'a' has two codes, 1 and 2"):
        class_codes([{"properties": {"class": "a", "code": 1}}, {"properties": {"class": "a", "code": 2}}])
    with pytest.raises(DataError, match="two classes share a code"):
        class_codes([{"properties": {"class": "a", "code": 1}}, {"properties": {"class": "b", "code": 1}}])
