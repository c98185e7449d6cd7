"""The STAC catalogue (issue 16.2): built from the real data, incremental, served by the WPS with
its per-user rules, walked with pystac and validated offline, and updated on publish,
withdrawal and expiry.

Identity in the in-process app comes from ``HeaderIdentity`` (the authenticator hook's
contract, as in ``test_wps_app.py``); the served catalogue is also walked against a real
``geoml-hub wps serve`` (``WpsServer``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import urllib.parse

import numpy as np
import pystac
import pytest
import rasterio
import requests
from rasterio.warp import transform_bounds
from werkzeug.test import Client

from conftest import CHIAPAS, DATA, EUROSAT_COUNTS, LABELS, SCENE_1999
from helpers import script, write_npy_tree, write_raster
from wps_server import WpsServer, execute, wait_final, wait_for
from geoml_hub import catalog as stac
from geoml_hub.client import Client as NotebookClient
from geoml_hub.processes import build_service
from geoml_hub.web.auth import Identity
from geoml_hub.wps.http.app import make_app
from geoml_hub.wps.jobs.catalog import catalog_dir, refresh_catalog
from geoml_hub.wps.jobs.dispatcher import Dispatcher
from geoml_hub.wps.jobs.store import JobStore
from geoml_hub.wps.settings import Settings


class HeaderIdentity:
    """Identity from an ``X-User`` header; none without it."""

    def identify(self, environ):
        name = environ.get("HTTP_X_USER")
        return Identity(name, admin=(name == "admin")) if name else None


class CountingOpen:
    """``rasterio.open`` that counts the files it opens (the real function does the work)."""

    def __init__(self, real):
        self.real, self.paths = real, []

    def __call__(self, path, *args, **kwargs):
        self.paths.append(os.path.basename(str(path)))
        return self.real(path, *args, **kwargs)


def walk_local(catalog_json):
    cat = pystac.Catalog.from_file(str(catalog_json))
    items = {it.id: it for it in cat.get_items(recursive=True)}
    collections = {c.id: c for c in cat.get_all_collections()}
    return cat, collections, items


# -- the builder on the real data -------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("stac") / "cat"
    cache = stac.Cache(out.parent / "cache.json")
    stac.save_catalog(stac.build_catalog({"data": DATA}, stac.file_hrefs(out), cache), out)
    cache.save()
    return out, walk_local(out / "catalog.json")


def test_scene_and_label_items_carry_wgs84_footprints_and_band_metadata(built):
    out, (cat, collections, items) = built
    assert set(collections) == {"data", "data.eurosat_ms"}
    assert set(items) == {"landsat7_chiapas.LE70220491999322EDC01_stack", "landsat7_chiapas.LE70220492002106EDC00_stack",
                          "landsat7_chiapas.training_data"}
    scene = items["landsat7_chiapas.LE70220491999322EDC01_stack"]
    labels = items["landsat7_chiapas.training_data"]
    for item, path in ((scene, SCENE_1999), (labels, LABELS)):
        with rasterio.open(path) as src:
            expected = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
        assert item.bbox == pytest.approx(expected, abs=1e-6)
        west, south, east, north = item.bbox  # Chiapas, southern Mexico: about 93.3 W, 15.7 N
        assert -93.4 < west < east < -93.2 and 15.6 < south < north < 15.8
        lons = [p[0] for p in item.geometry["coordinates"][0]]
        lats = [p[1] for p in item.geometry["coordinates"][0]]
        assert min(lons) == pytest.approx(west, abs=1e-6) and max(lats) == pytest.approx(north, abs=1e-6)
        proj = item.ext.proj
        assert proj.code == "EPSG:32615" and proj.shape == [250, 250]
        assert proj.transform == [30.0, 0.0, 462405.0, 0.0, -30.0, 1741815.0]
        assert item.properties["geoml:dataset"] == "data/landsat7_chiapas/" + path.name
        # the asset is the file itself, relative to the catalogue
        asset = next(iter(item.assets.values()))
        assert os.path.samefile(asset.get_absolute_href(), path)
    asset = scene.assets["data"]
    assert asset.roles == ["data"] and asset.media_type == pystac.MediaType.GEOTIFF
    with rasterio.open(SCENE_1999) as src:
        names = [d or f"band {i}" for i, d in enumerate(src.descriptions, 1)]
    assert [b.name for b in asset.ext.eo.bands] == names and names[0] == "band 1 reflectance"
    assert [b.to_dict()["data_type"] for b in asset.ext.raster.bands] == ["int16"] * 8
    assert {b.nodata for b in asset.ext.raster.bands} == {-9999.0}
    # the Landsat scene id gives the acquisition date (day 322 of 1999 = 18 November)
    assert scene.datetime == dt.datetime(1999, 11, 18, tzinfo=dt.timezone.utc)
    assert scene.properties["platform"] == "landsat-7" and scene.properties["instruments"] == ["etm+"]
    later = items["landsat7_chiapas.LE70220492002106EDC00_stack"]
    assert later.datetime == dt.datetime(2002, 4, 16, tzinfo=dt.timezone.utc)
    assert later.assets["data"].ext.raster.bands[0].nodata is None
    # the label raster: role labels, uint8, nodata 0; no date in it, so its file's time, and said so
    lab = labels.assets["labels"]
    assert lab.roles == ["labels"] and lab.ext.raster.bands[0].to_dict()["data_type"] == "uint8"
    assert lab.ext.raster.bands[0].nodata == 0
    assert labels.properties["geoml:datetime_source"] == "file-mtime"
    assert labels.datetime == dt.datetime.fromtimestamp(int(os.stat(LABELS).st_mtime), dt.timezone.utc)


def test_sample_tree_is_a_collection_with_its_class_counts(built):
    _, (cat, collections, items) = built
    tree = collections["data.eurosat_ms"]
    assert tree.extra_fields["geoml:dataset"] == "data/eurosat_ms"
    assert tree.get_parent().id == "data" and not list(tree.get_items())
    counts = {c["name"]: c["count"] for c in tree.summaries.get_list("label:overviews")[0]["counts"]}
    assert counts == EUROSAT_COUNTS
    assert tree.summaries.get_list("label:classes")[0]["classes"] == sorted(EUROSAT_COUNTS)
    # EuroSAT patches are European (UTM zones 29 to 36 N): the union of their footprints
    west, south, east, north = tree.extent.spatial.bboxes[0]
    assert -15 < west < east < 40 and 30 < south < north < 72


def test_the_catalogue_validates_offline_against_the_core_schemas(built, monkeypatch):
    _, (cat, collections, items) = built

    def no_network(*args, **kwargs):
        raise AssertionError("validation tried to reach the network")

    monkeypatch.setattr(pystac.StacIO.default(), "read_text_from_href", no_network)
    uris = set()
    for obj in [cat, *collections.values(), *items.values()]:
        uris.update(stac.validate_offline(obj.to_dict()))
    assert {u.rsplit("/", 1)[-1] for u in uris} == {"catalog.json", "collection.json", "item.json"}
    broken = items["landsat7_chiapas.training_data"].to_dict()
    del broken["properties"]["datetime"]
    with pytest.raises(pystac.STACValidationError):
        stac.validate_offline(broken)


def test_rebuild_reads_only_changed_files(tmp_path, monkeypatch):
    root = tmp_path / "root"
    shutil.copytree(CHIAPAS, root / "landsat7_chiapas")  # a copy: the shared data is never touched
    (root / "broken.tif").write_bytes(b"not a GeoTIFF")  # skipped, and not read again either
    out, cache_file = tmp_path / "cat", tmp_path / "cache.json"
    counter = CountingOpen(rasterio.open)
    monkeypatch.setattr(rasterio, "open", counter)

    def build():
        cache = stac.Cache(cache_file)
        stac.save_catalog(stac.build_catalog({"data": root}, stac.file_hrefs(out), cache), out)
        cache.save()
        return {it.id: it.to_dict() for it in pystac.Catalog.from_file(str(out / "catalog.json"))
                .get_items(recursive=True)}

    first = build()
    assert sorted(counter.paths) == sorted(["broken.tif"] + [p.name for p in root.rglob("*.gtif")])
    assert len(first) == 3
    counter.paths.clear()
    assert build() == first and counter.paths == []  # unchanged: nothing opened, the same items
    labels = root / "landsat7_chiapas" / "training_data.gtif"
    st = labels.stat()
    os.utime(labels, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = build()
    assert counter.paths == ["training_data.gtif"]
    assert third["landsat7_chiapas.training_data"]["properties"]["datetime"] != \
        first["landsat7_chiapas.training_data"]["properties"]["datetime"]
    (root / "landsat7_chiapas" / "LE70220492002106EDC00_stack.gtif").unlink()
    assert "landsat7_chiapas.LE70220492002106EDC00_stack" not in build()


def test_cli_writes_the_catalogue_and_refuses_a_foreign_out(tmp_path):
    out = tmp_path / "cat"
    r = script("catalog", "--data-root", f"data={DATA}", "--out", str(out), "-q")
    assert r.returncode == 0, r.stderr
    assert "3 raster item(s), 1 sample tree(s); 272 file(s) read" in r.stdout
    r = script("catalog", "--data-root", f"data={DATA}", "--out", str(out), "-q")
    assert r.returncode == 0 and "0 file(s) read" in r.stdout, r.stdout
    assert json.loads((out / "catalog.json").read_text())["type"] == "Catalog"
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    r = script("catalog", "--data-root", f"data={DATA}", "--out", str(foreign))
    assert r.returncode == 2 and "not a STAC catalogue" in r.stderr
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    r = script("catalog", "--data-root", f"data={tmp_path / 'nowhere'}", "--out", str(out))
    assert r.returncode == 2 and "no such directory" in r.stderr


# -- served by the WPS, with its rules ----------------------------------------------------------------
@pytest.fixture(scope="module")
def wps_app(tmp_path_factory):
    """The WPS app under the hub's prefix (``/services/wps``), with the real processes."""
    settings = Settings(state_dir=tmp_path_factory.mktemp("stacwps") / "state", data_roots={"data": DATA},
                        auth="jupyterhub", url="http://hub.example/services/wps")
    service = build_service(settings)
    app = make_app(settings, service, HeaderIdentity())
    refresh_catalog(settings, JobStore(settings.database))  # what the dispatcher does at start-up
    return settings, service, Client(app)


def fetch(client, url, user):
    path = urllib.parse.urlparse(url).path
    r = client.get(path, headers={"X-User": user} if user else {})
    return r


def walk_served(client, user, start="http://hub.example/services/wps/stac/catalog.json"):
    """Follow child and item links from the served catalog.json, resolving the relative hrefs as a
    STAC client does: ``{url: json}``."""
    seen, todo = {}, [start]
    while todo:
        url = todo.pop()
        r = fetch(client, url, user)
        assert r.status_code == 200, (url, r.status_code, r.data[:200])
        assert r.headers["Content-Type"] in ("application/json", "application/geo+json")
        seen[url] = doc = r.json
        todo += [urllib.parse.urljoin(url, link["href"]) for link in doc["links"] if link["rel"] in ("child", "item")]
    return seen


def extract_job(client, user):
    """A real extract_samples job on the Chiapas scene (sync): it writes two label rasters."""
    inputs = {"scene": "data/landsat7_chiapas/" + SCENE_1999.name, "reference": "data/landsat7_chiapas/training_data.gtif",
              "test_fraction": "0.3"}
    parts = ";".join(f"{k}={urllib.parse.quote(v, safe='/:')}" for k, v in inputs.items())
    r = client.get(f"/services/wps/wps?service=WPS&request=Execute&version=1.0.0&identifier=extract_samples"
                   f"&DataInputs={parts}", headers={"X-User": user})
    assert r.status_code == 200 and b"ProcessSucceeded" in r.data, r.data[-2000:]
    return last_job(client, user)


def last_job(client, user):
    jobs = client.get("/services/wps/jobs", headers={"X-User": user}).json["jobs"]
    return jobs[0]["job_id"]


def results_items(client, user):
    docs = walk_served(client, user)
    return {d["id"]: (u, d) for u, d in docs.items() if d["type"] == "Feature" and d.get("collection") == "results"}


def test_served_catalogue_resolves_behind_the_prefix_and_needs_a_login(wps_app):
    settings, _, c = wps_app
    assert c.get("/services/wps/stac/catalog.json").status_code == 401
    assert c.get("/services/wps/data/data/landsat7_chiapas/training_data.gtif").status_code == 401
    docs = walk_served(c, "alice")
    assert {d["id"] for d in docs.values()} >= {"geoml-hub", "data", "data.eurosat_ms", "results",
                                                 "landsat7_chiapas.training_data"}
    for url, doc in docs.items():
        stac.validate_offline(doc)
        for asset in doc.get("assets", {}).values():  # every asset href resolves to a file the WPS serves
            href = urllib.parse.urljoin(url, asset["href"])
            assert href.startswith("http://hub.example/services/wps/data/data/landsat7_chiapas/"), href
            r = fetch(c, href, "bob")
            assert r.status_code == 200 and r.headers["Content-Type"] == asset["type"]
            name = href.rsplit("/", 1)[1]
            assert len(r.data) == (CHIAPAS / name).stat().st_size
    # read-only, and nothing outside the data roots
    assert c.delete("/services/wps/stac/catalog.json", headers={"X-User": "alice"}).status_code == 405
    for bad in ("/services/wps/data/data/../../etc/passwd", "/services/wps/data/nope/x.tif",
                "/services/wps/stac/../settings.json", "/services/wps/data/data/%2e%2e/x"):
        assert c.get(bad, headers={"X-User": "alice"}).status_code == 404, bad


def test_publish_adds_a_result_withdraw_and_expiry_remove_it(wps_app):
    settings, service, c = wps_app
    alice, bob = {"X-User": "alice"}, {"X-User": "bob"}
    job = extract_job(c, "alice")
    assert job not in results_items(c, "bob") and job not in results_items(c, "alice")  # private: not listed
    assert c.get(f"/services/wps/outputs/{job}/reference_test.tif", headers=bob).status_code == 404
    assert c.post(f"/services/wps/jobs/{job}/publish", headers=alice).status_code == 200
    found = results_items(c, "bob")
    assert set(found) == {job}
    url, item = found[job]
    assert item["properties"]["geoml:owner"] == "alice" and item["properties"]["geoml:process"] == "extract_samples"
    stac.validate_offline(item)
    rasters = {k: a for k, a in item["assets"].items() if a.get("type") == pystac.MediaType.GEOTIFF}
    assert set(rasters) == {"reference_train", "reference_test"}
    assert all(a["roles"] == ["labels"] and a["raster:bands"][0]["data_type"] == "uint8" for a in rasters.values())
    assert item["bbox"] == pytest.approx(results_bbox_of(settings), abs=1e-6)
    assert item["properties"]["proj:code"] == "EPSG:32615"
    href = urllib.parse.urljoin(url, rasters["reference_test"]["href"])
    assert urllib.parse.urlparse(href).path == f"/services/wps/outputs/{job}/reference_test.tif"
    assert fetch(c, href, "bob").status_code == 200  # published: every user reads it
    # withdrawn: gone from the catalogue, and bob can no longer read it
    assert c.delete(f"/services/wps/jobs/{job}/publish", headers=alice).status_code == 200
    assert job not in results_items(c, "bob")
    assert fetch(c, href, "bob").status_code == 404
    # published again, then its outputs expire: gone again
    assert c.post(f"/services/wps/jobs/{job}/publish", headers=alice).status_code == 200
    assert job in results_items(c, "bob")
    swept = Dispatcher(settings, service).sweep(now=dt.datetime.utcnow() + dt.timedelta(hours=settings.retention_hours + 1))
    assert swept >= 1
    assert job not in results_items(c, "bob")


def test_a_published_job_dismissed_through_ogc_api_leaves_the_catalogue(wps_app):
    settings, _, c = wps_app
    alice = {"X-User": "alice"}
    job = extract_job(c, "alice")
    assert c.post(f"/services/wps/jobs/{job}/publish", headers=alice).status_code == 200
    assert job in results_items(c, "bob")
    assert c.delete(f"/services/wps/ogcapi/jobs/{job}", headers=alice).status_code == 200
    assert job not in results_items(c, "bob")


def results_bbox_of(settings):
    with rasterio.open(LABELS) as src:  # extract_samples writes its reference rasters on the scene's grid
        return transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)


# -- a real server ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_pystac_walks_the_catalogue_of_a_running_wps_and_publishing_updates_it(tmp_path):
    with WpsServer(tmp_path / "wps", parallel=1) as wps:
        # built at start-up, in the background (logged once it is in place)
        wait_for(lambda: "STAC catalogue (start-up)" in wps.log_text(), timeout=120, what="the start-up catalogue")
        r = requests.get(wps.url + "/stac/catalog.json", timeout=10)
        assert r.headers["Content-Type"] == "application/json"
        cat = pystac.Catalog.from_file(wps.url + "/stac/catalog.json")
        items = {it.id: it for it in cat.get_items(recursive=True)}
        assert "landsat7_chiapas.training_data" in items
        for obj in [cat, *cat.get_all_collections(), *items.values()]:
            stac.validate_offline(obj.to_dict())
        # the notebook client's dataset discovery reads the same catalogue through its session
        found = {i.properties["geoml:dataset"]: i for i in NotebookClient(wps.url, progress=False).catalog()
                 .get_items(recursive=True)}
        assert set(found) == {"data/landsat7_chiapas/" + p.name for p in CHIAPAS.glob("*.gtif")}
        assert found["data/landsat7_chiapas/training_data.gtif"].bbox == items["landsat7_chiapas.training_data"].bbox
        href = items["landsat7_chiapas.training_data"].assets["labels"].get_absolute_href()
        assert href == wps.url + "/data/data/landsat7_chiapas/training_data.gtif"
        with rasterio.open(href) as src:  # GDAL reads the asset over HTTP, as stackstac would
            assert src.count == 1 and src.dtypes[0] == "uint8" and src.crs.to_epsg() == 32615
        job, _, _ = execute(wps, "validate_classification", {"classification": "data/landsat7_chiapas/training_data.gtif",
                                                             "reference": "data/landsat7_chiapas/training_data.gtif"})
        assert wait_final(wps, [job])[job]["status"] == "succeeded"
        assert requests.post(f"{wps.url}/jobs/{job}/publish", timeout=60).status_code == 200
        results = pystac.Collection.from_file(wps.url + "/stac/results/collection.json")
        item = {it.id: it for it in results.get_items()}[job]
        assert item.geometry is None and "summary" in item.assets  # QC only: no raster, no footprint
        assert requests.get(item.assets["summary"].get_absolute_href(), timeout=30).json()["overall_accuracy"] == 1.0
        assert requests.delete(f"{wps.url}/jobs/{job}/publish", timeout=60).status_code == 200
        results = pystac.Collection.from_file(wps.url + "/stac/results/collection.json")
        assert [it.id for it in results.get_items()] == []


def test_scenes_in_sub_folders_stay_scenes_and_npy_trees_are_counted(tmp_path):
    """The sample-tree rule: sub-folders of full scenes are not a sample tree (their first GeoTIFF
    is larger than a patch); a NumPy tree is, with its containers' sample counts."""
    root = tmp_path / "root"
    for year, scene in (("1999", SCENE_1999), ("2002", CHIAPAS / "LE70220492002106EDC00_stack.gtif")):
        (root / "scenes" / year).mkdir(parents=True)
        shutil.copy(scene, root / "scenes" / year / scene.name)
    rng = np.random.default_rng(0)
    write_npy_tree(root / "extracted", {"forest": [rng.random((5, 3, 1, 1)), rng.random((2, 3, 1, 1))],
                                        "water": [rng.random((4, 3, 1, 1))]}, classes={"forest": 1, "water": 2})
    stac.save_catalog(stac.build_catalog({"x": root}, stac.file_hrefs(tmp_path / "out")), tmp_path / "out")
    cat = pystac.Catalog.from_file(str(tmp_path / "out" / "catalog.json"))
    items = {it.id: it for it in cat.get_items(recursive=True)}
    assert set(items) == {"scenes.1999.LE70220491999322EDC01_stack", "scenes.2002.LE70220492002106EDC00_stack"}
    trees = {c.id: c for c in cat.get_all_collections() if c.extra_fields.get("geoml:kind") == "sample-tree"}
    assert set(trees) == {"x.extracted"}
    counts = trees["x.extracted"].summaries.get_list("label:overviews")[0]["counts"]
    assert counts == [{"name": "forest", "count": 7}, {"name": "water", "count": 4}]
    for obj in [cat, *cat.get_all_collections(), *items.values()]:
        stac.validate_offline(obj.to_dict())


def test_a_classification_result_has_classification_and_confidence_assets(tmp_path):
    """The roles of a classify_scene-like output folder: the class raster is ``classification``
    (and gives the item its footprint and grid), the probability raster ``confidence``, the
    rest ``metadata``."""
    folder = tmp_path / "job"
    rng = np.random.default_rng(1)
    write_raster(folder / "classification.tif", rng.integers(1, 6, (300, 200), dtype=np.uint8), nodata=255)
    write_raster(folder / "confidence.tif", rng.random((300, 200), dtype=np.float32))
    (folder / "summary.json").write_text("{}")
    (folder / "job.json").write_text("{}")
    finished = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)
    coll = stac.results_collection([stac.Result("0f" * 16, "classify_scene", "alice", folder, finished)],
                                   lambda kind, name, rel, path: f"../outputs/{name}/{rel}", stac.Cache())
    item = next(iter(coll.get_items()))
    assert {k: a.roles for k, a in item.assets.items()} == {
        "classification": ["classification"], "confidence": ["confidence"], "summary": ["metadata"]}
    assert item.assets["classification"].ext.raster.bands[0].nodata == 255
    assert item.assets["confidence"].ext.raster.bands[0].to_dict()["data_type"] == "float32"
    assert item.ext.proj.shape == [300, 200] and item.ext.proj.code == "EPSG:32615"
    west, south, east, north = item.bbox  # write_raster's grid starts at the Chiapas scene's corner
    assert -93.36 < west < east < -93.2 and 15.6 < south < north < 15.76
    assert item.datetime == finished and item.properties["geoml:owner"] == "alice"
    assert item.assets["summary"].href == f"../outputs/{'0f' * 16}/summary.json"
    assert coll.extent.spatial.bboxes[0] == item.bbox
