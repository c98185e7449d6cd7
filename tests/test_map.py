"""The web map service over HTTP: a real ``geoml-hub map serve`` beside a real standalone
``geoml-hub wps serve``, on the Chiapas data. Tiles are checked by their pixels against the
scene (georeferencing and stretch), label tiles by their colours; the WPS is reached through
the map; polygons saved through the map feed extract_samples; a job's output raster is tiled.
Two users: the real WPS and map apps in this process, with hub-like tokens as identities (the
authenticator hook's contract), the WPS served over HTTP on loopback.
(The hub login, two users and the browser: tests/test_map_browser.py.)"""

from __future__ import annotations

import io
import json
import os
import html
import re
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
import requests
from PIL import Image
from rasterio.warp import transform_bounds

from conftest import CHIAPAS_NAMES, LABELS, SCENE_1999
from helpers import CONSOLE_SCRIPT, XSS_NAME, TokenIdentity, hostile_labels
from helpers import chiapas_polygons
from wps_server import DATA, NS, WpsServer, free_port, wait_final, wait_for
from geoml_hub.map import tiles

pytestmark = pytest.mark.slow

SCENE = "data/landsat7_chiapas/LE70220491999322EDC01_stack.gtif"
REFERENCE = "data/landsat7_chiapas/training_data.gtif"
MAP_JS = Path(__file__).resolve().parents[1] / "src" / "geoml_hub" / "map" / "static" / "js"


class MapServer:
    """A ``geoml-hub map serve`` subprocess in front of a WPS."""

    def __init__(self, tmp, wps_url: str, extra=()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "map.log"
        ready = tmp / "map.ready"
        cmd = [str(CONSOLE_SCRIPT), "map", "serve", "--port", str(self.port), "--data-root", f"data={DATA}",
               "--wps-url", wps_url, "--cache-dir", str(tmp / "map-cache"), "--ready-file", str(ready), *extra]
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"map server did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        urllib.request.urlopen(self.url + "/health", timeout=10)

    def get(self, path, **kw):
        return requests.get(self.url + path, timeout=60, **kw)

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("map")
    with WpsServer(tmp / "wps", parallel=2) as wps:
        m = MapServer(tmp, wps.url, extra=["--revalidate-seconds", "0"])
        yield m, wps
        m.stop()


def tile_of(lon, lat, zoom):
    import morecantile

    t = morecantile.tms.get("WebMercatorQuad").tile(lon, lat, zoom)
    return t.x, t.y, zoom


def png(resp) -> np.ndarray:
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "image/png", resp.text[:300]
    return np.asarray(Image.open(io.BytesIO(resp.content)).convert("RGBA"))


def test_page_and_vendored_leaflet_need_no_network(stack):
    m, _ = stack
    page = m.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    for ref in ("vendor/leaflet/leaflet.js", "vendor/leaflet-draw/leaflet.draw.js", "static/js/main.js"):
        assert ref in page.text
        assert m.get("/" + ref).status_code == 200
    # Leaflet stays classic scripts (the global L) before the page's entry module
    assert '<script type="module" src="static/js/main.js">' in page.text
    assert page.text.index("leaflet.draw.js") < page.text.index("static/js/main.js")
    for module in js_modules():
        r = m.get(f"/static/js/{module}")
        assert r.status_code == 200 and r.headers["Content-Type"].split(";")[0] in (
            "text/javascript", "application/javascript"), module   # a module needs a JavaScript type
    assert "http://" not in page.text and "https://" not in page.text   # no CDN
    assert m.get("/vendor/leaflet/../../package.json").status_code == 404
    assert m.get("/static/../app.py").status_code == 404


def js_modules(entry: str = "main.js") -> dict:
    """The page's ES modules reachable from ``entry``: file name -> the modules it imports."""
    graph, todo = {}, [entry]
    while todo:
        name = todo.pop()
        if name in graph:
            continue
        text = (MAP_JS / name).read_text()
        graph[name] = re.findall(r'^import\b[^;]*?from\s+"\./([\w-]+\.js)";', text, re.M | re.S)
        todo += graph[name]
    return graph


def test_page_modules_import_each_other_without_cycles():
    graph = js_modules()
    assert set(graph) == {p.name for p in MAP_JS.glob("*.js")}   # every module is used
    done, path = set(), []

    def visit(name):
        assert name not in path, f"import cycle: {' -> '.join(path[path.index(name):] + [name])}"
        if name not in done:
            path.append(name)
            for dep in graph[name]:
                visit(dep)
            path.pop()
            done.add(name)

    visit("main.js")
    # every imported name is exported by the module it comes from
    for name in graph:
        for names, dep in re.findall(r'^import\s*\{([^}]*)\}\s*from\s+"\./([\w-]+\.js)";',
                                     (MAP_JS / name).read_text(), re.M):
            exported = set(re.findall(r"^export\s+(?:async\s+)?(?:function|const|let)\s+([\w$]+)",
                                      (MAP_JS / dep).read_text(), re.M))
            missing = {n.strip() for n in names.split(",") if n.strip()} - exported
            assert not missing, f"{name} imports {missing} that {dep} does not export"


def test_layers_are_the_scenes_and_labels_with_their_bounds(stack):
    """The layer list comes from the WPS's STAC catalogue (issue 16.2), and is what walking the
    data roots and opening every raster gave before."""
    m, wps = stack
    wait_for(lambda: requests.get(wps.url + "/stac/catalog.json", timeout=10).status_code == 200, timeout=120,
             what="the WPS's STAC catalogue")
    listed = m.get("/api/layers").json()["layers"]
    assert "walking the data roots" not in m.log.read_text()  # read from the catalogue, not the folders
    assert listed == json.loads(json.dumps(tiles.list_rasters({"data": DATA})))
    layers = {layer["dataset"]: layer for layer in listed}
    assert set(layers) == {SCENE, REFERENCE, "data/landsat7_chiapas/LE70220492002106EDC00_stack.gtif"}
    scene, ref = layers[SCENE], layers[REFERENCE]
    assert (scene["kind"], scene["bands"], ref["kind"]) == ("scene", 8, "labels")
    assert scene["presets"] == {"true colour": [3, 2, 1], "false colour": [4, 3, 2]}
    with rasterio.open(SCENE_1999) as src:
        expected = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
    assert np.allclose(scene["bounds"], expected, atol=1e-6)


def test_scene_tiles_are_georeferenced_and_stretched(stack):
    m, _ = stack
    with rasterio.open(SCENE_1999) as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        red = src.read(3).astype(float)
        nir = src.read(4).astype(float)
    x, y, z = tile_of((west + east) / 2, (south + north) / 2, 12)
    url = f"/api/tiles/{z}/{x}/{y}.png"
    true = png(m.get(url, params={"dataset": SCENE, "bands": "3,2,1"}))
    false = png(m.get(url, params={"dataset": SCENE, "bands": "4,3,2"}))
    assert true.shape == (256, 256, 4)
    opaque = true[..., 3] > 0
    # the 7.5 km scene covers part of this zoom-12 tile (about 9.8 km wide), no more
    assert 0.2 < opaque.mean() < 0.95
    # the stretch spreads the values: 2nd..98th percentile -> 0..255
    vals = true[..., 0][opaque]
    assert vals.min() <= 10 and vals.max() >= 245 and 40 < vals.mean() < 200
    # false colour: vegetation is bright in NIR (red channel) -- as in the scene, NIR > red mostly
    assert (nir > red).mean() > 0.9
    assert false[..., 0][opaque].mean() > true[..., 0][opaque].mean()
    # a tile far away has nothing
    x2, y2, _ = tile_of(10.0, 50.0, 12)
    assert m.get(f"/api/tiles/12/{x2}/{y2}.png", params={"dataset": SCENE}).status_code == 204
    # bad requests are one clear error
    bad = m.get(url, params={"dataset": SCENE, "bands": "9,2,1"})
    assert bad.status_code == 400 and "bands must be 1 or 3 band numbers from 1 to 8" in bad.json()["error"]
    assert m.get(url, params={"dataset": "data/../../etc/passwd"}).status_code == 404
    assert m.get(url, params={"dataset": "elsewhere/x.tif"}).status_code == 400


def test_scene_tile_matches_the_scene_reprojected_to_web_mercator(stack):
    """Georeferencing: a zoom-15 tile's red channel equals the scene's band 3 warped by rasterio
    onto the tile's Web Mercator grid (the same stretch applied)."""
    import morecantile
    from rasterio.enums import Resampling
    from rasterio.transform import from_bounds
    from rasterio.warp import reproject

    m, _ = stack
    with rasterio.open(SCENE_1999) as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        band = src.read(3).astype("float64")
        lo, hi = np.percentile(band, [2, 98])
        x, y, z = tile_of((west + east) / 2, (south + north) / 2, 15)
        b = morecantile.tms.get("WebMercatorQuad").xy_bounds(morecantile.Tile(x, y, z))
        expected = np.full((256, 256), np.nan)
        reproject(band, expected, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=from_bounds(b.left, b.bottom, b.right, b.top, 256, 256), dst_crs="EPSG:3857",
                  resampling=Resampling.bilinear, dst_nodata=np.nan)
    img = png(m.get(f"/api/tiles/{z}/{x}/{y}.png", params={"dataset": SCENE, "bands": "3,2,1"}))
    both = (img[..., 3] > 0) & np.isfinite(expected)
    assert both.mean() > 0.5
    want = np.clip((expected[both] - lo) / (hi - lo) * 255, 0, 255)
    got = img[..., 0][both].astype(float)
    assert np.corrcoef(want, got)[0, 1] > 0.97
    assert np.median(np.abs(want - got)) < 12   # the stretch over the whole raster (an overview) ~ ours
    # shifted by 8 pixels, the agreement drops: the match is not a coincidence of smooth images
    shifted = np.roll(img[..., 0].astype(float), 8, axis=1)[both]
    assert np.corrcoef(want, shifted)[0, 1] < np.corrcoef(want, got)[0, 1] - 0.05


def test_label_tiles_use_the_legend_colours_and_are_transparent_where_unlabelled(stack):
    m, _ = stack
    legend = m.get("/api/legend", params={"dataset": REFERENCE}).json()["classes"]
    assert [c["code"] for c in legend] == sorted(CHIAPAS_NAMES)
    colours = {tuple(int(c["color"][i:i + 2], 16) for i in (1, 3, 5)) for c in legend}
    with rasterio.open(LABELS) as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        labelled = (src.read(1) > 0).mean()
    x, y, z = tile_of((west + east) / 2, (south + north) / 2, 14)
    img = png(m.get(f"/api/tiles/{z}/{x}/{y}.png", params={"dataset": REFERENCE}))
    shown = img[..., 3] > 0
    assert shown.any() and shown.mean() < 0.5 and labelled < 0.2
    assert {tuple(p) for p in img[..., :3][shown]} <= colours
    assert m.get("/api/legend", params={"dataset": SCENE}).status_code == 400


def test_wps_through_the_map_and_polygons_saved_in_the_workspace(stack, tmp_path):
    m, wps = stack
    caps = m.get("/api/wps/wps", params={"service": "WPS", "request": "GetCapabilities"})
    ids = [e.text for e in ET.fromstring(caps.content).findall(".//wps:Process/ows:Identifier", NS)]
    assert "extract_samples" in ids and len(ids) == 8
    # save polygons (as the map's draw tool does), refuse bad ones
    chiapas_polygons(tmp_path / "p.geojson")
    body = (tmp_path / "p.geojson").read_bytes()
    saved = requests.put(m.url + "/api/wps/workspace/chiapas.geojson", data=body, timeout=60,
                         headers={"Content-Type": "application/geo+json"})
    assert saved.status_code == 200, saved.text
    assert saved.json()["dataset"] == "workspace/local/chiapas.geojson"
    assert saved.json()["classes"] == {n: c for c, n in CHIAPAS_NAMES.items()}
    bad = requests.put(m.url + "/api/wps/workspace/bad.geojson", data=b'{"type": "Feature"}', timeout=60)
    assert bad.status_code == 400 and "FeatureCollection" in bad.json()["error"]
    assert requests.put(m.url + "/api/wps/workspace/../x.geojson", data=body, timeout=60).status_code in (400, 404)
    assert [f["name"] for f in m.get("/api/wps/workspace").json()["files"]] == ["chiapas.geojson"]
    # extract_samples on the polygons, through the map, with a spatial split
    r = m.get("/api/wps/wps", params={"service": "WPS", "request": "Execute", "version": "1.0.0",
                                      "identifier": "extract_samples", "storeExecuteResponse": "true",
                                      "status": "true", "DataInputs": f"scene={SCENE};reference=workspace/local/"
                                                                      "chiapas.geojson;test_fraction=0.3"})
    loc = ET.fromstring(r.content).get("statusLocation")
    job_id = loc.rsplit("/", 1)[1][:-4]
    final = wait_final(wps, [job_id], timeout=120)[job_id]
    assert final["status"] == "succeeded", final
    assert json.loads(m.get(f"/api/wps/outputs/{job_id}/class_counts.json").content)   # outputs via the map
    # the job's held-out labels as a map layer (fetched from the WPS, then tiled)
    dataset = f"jobs/{job_id}/reference_test.tif"
    info = m.get("/api/layer-info", params={"dataset": dataset}).json()
    assert info["kind"] == "labels"
    legend = m.get("/api/legend", params={"dataset": dataset}).json()["classes"]
    assert {c["code"] for c in legend} <= set(CHIAPAS_NAMES)
    west, south, east, north = info["bounds"]
    x, y, z = tile_of((west + east) / 2, (south + north) / 2, 13)
    assert png(m.get(f"/api/tiles/{z}/{x}/{y}.png", params={"dataset": dataset}))[..., 3].any()
    assert m.get("/api/layer-info", params={"dataset": "jobs/00000000-0000-0000-0000-000000000000/x.tif"}
                 ).status_code == 404
    # the retention policy removes the job's outputs: the map's cached copy is not shown any more
    from geoml_hub.wps.jobs.store import JobStore

    store = JobStore(f"sqlite:///{wps.state_dir.resolve() / 'log.sqlite'}")
    store.mark_outputs_removed(job_id)
    store.dispose()
    (wps.state_dir / "outputs" / job_id / "reference_test.tif").unlink()
    gone = m.get("/api/layer-info", params={"dataset": dataset})
    assert gone.status_code == 410, gone.text


# -- two users ----------------------------------------------------------------------------------------
ALICE, BOB = {"Authorization": "token alice-token"}, {"Authorization": "token bob-token"}


@pytest.fixture(scope="module")
def two_users(tmp_path_factory):
    """The WPS app (its real processes, on the real data) served over HTTP on loopback, and the
    map app in front of it, both identifying alice and bob by their tokens; the map calls the WPS
    with the user's token. Yields ``(map client, WPS settings, map cache folder)``."""
    from werkzeug.serving import make_server
    from werkzeug.test import Client

    from geoml_hub.map.app import MapApp, MapSettings
    from geoml_hub.wps.http.app import make_app
    from geoml_hub.processes import build_service
    from geoml_hub.wps.settings import Settings

    tmp = tmp_path_factory.mktemp("two-users")
    auth = TokenIdentity({"alice-token": "alice", "bob-token": "bob"})
    port = free_port()
    settings = Settings(state_dir=tmp / "wps", data_roots={"data": DATA}, auth="jupyterhub",
                        url=f"http://127.0.0.1:{port}")
    httpd = make_server("127.0.0.1", port, make_app(settings, build_service(settings), auth), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    cache = tmp / "map-cache"
    m = Client(MapApp(MapSettings(data_roots={"data": DATA}, wps_url=settings.url, cache_dir=cache), auth))
    yield m, settings, cache
    httpd.shutdown()
    thread.join(30)


def execute_sync(m, headers, identifier, inputs):
    """Execute a process synchronously through the map's WPS proxy; the job id."""
    query = {"service": "WPS", "request": "Execute", "version": "1.0.0", "identifier": identifier,
             "DataInputs": ";".join(f"{k}={urllib.parse.quote(str(v), safe='/:')}" for k, v in inputs.items())}
    r = m.get("/api/wps/wps", query_string=query, headers=headers)
    assert r.status_code == 200 and b"ProcessSucceeded" in r.data, r.data[-2000:]
    href = ET.fromstring(r.data).find(".//wps:Reference", NS).get("href")
    return urllib.parse.urlparse(href).path.split("/")[-2]


def test_job_outputs_on_the_map_are_cached_per_user_and_checked_every_time(two_users):
    """Alice views her job's raster; bob then gets 404 for its info, preview, legend and tiles,
    exactly as for an unknown job, although alice's copy is cached; every cached answer is checked
    with the WPS first (publishing, withdrawing and retention take effect at once)."""
    from geoml_hub.wps.jobs.store import JobStore

    m, settings, cache = two_users
    job = execute_sync(m, ALICE, "extract_samples", {"scene": SCENE, "reference": REFERENCE, "test_fraction": 0.3})
    dataset = f"jobs/{job}/reference_test.tif"
    unknown = f"jobs/{uuid.uuid4()}/reference_test.tif"
    info = m.get("/api/layer-info", query_string={"dataset": dataset}, headers=ALICE)
    assert info.status_code == 200 and info.json["kind"] == "labels", info.data
    west, south, east, north = info.json["bounds"]
    x, y, z = tile_of((west + east) / 2, (south + north) / 2, 13)
    views = ["/api/layer-info", "/api/legend", "/api/preview.png", f"/api/tiles/{z}/{x}/{y}.png"]
    for path in views:
        assert m.get(path, query_string={"dataset": dataset}, headers=ALICE).status_code == 200, path
    assert [p.name for p in cache.iterdir()] == ["u-alice"]
    for path in views:  # alice's copy is in the cache now; bob gets nothing of it
        theirs = m.get(path, query_string={"dataset": dataset}, headers=BOB)
        missing = m.get(path, query_string={"dataset": unknown}, headers=BOB)
        assert (theirs.status_code, missing.status_code) == (404, 404), (path, theirs.data)
        assert theirs.json["error"] == missing.json["error"].replace(unknown, dataset)
    # published, bob sees it (from his own cache folder); withdrawn, at once not any more
    assert m.post(f"/api/wps/jobs/{job}/publish", headers=ALICE).status_code == 200
    assert m.get("/api/legend", query_string={"dataset": dataset}, headers=BOB).status_code == 200
    assert sorted(p.name for p in cache.iterdir()) == ["u-alice", "u-bob"]
    assert m.delete(f"/api/wps/jobs/{job}/publish", headers=ALICE).status_code == 200
    assert m.get("/api/legend", query_string={"dataset": dataset}, headers=BOB).status_code == 404
    # the retention policy removes the outputs: alice's cached copy is not shown either
    store = JobStore(settings.database)
    store.mark_outputs_removed(job)
    store.dispose()
    (settings.job_outputs(job) / "reference_test.tif").unlink()
    assert m.get("/api/layer-info", query_string={"dataset": dataset}, headers=ALICE).status_code == 410


def test_job_outputs_through_the_map_are_sandboxed(two_users):
    """A report whose class names are markup, read through the map (same origin as the page): the
    names are escaped and every /api/ answer is sandboxed and not sniffed; the map's own page and
    scripts are not sandboxed (they must run)."""
    m, settings, _ = two_users
    hostile_labels(LABELS, settings.workspace_dir / "alice" / "xss.tif")
    job = execute_sync(m, ALICE, "validate_classification",
                       {"classification": "workspace/alice/xss.tif", "reference": REFERENCE})
    report = m.get(f"/api/wps/outputs/{job}/report.html", headers=ALICE)
    assert report.status_code == 200 and report.headers["Content-Type"].startswith("text/html")
    assert report.headers.get("Content-Security-Policy") == "sandbox"
    assert report.headers.get("X-Content-Type-Options") == "nosniff"
    assert XSS_NAME.encode() not in report.data and html.escape(XSS_NAME).encode() in report.data
    for path in ("/api/config", "/api/layers", f"/api/wps/jobs/{job}", f"/api/wps/outputs/{job}/summary.json",
                 f"/api/preview.png?dataset={REFERENCE}", f"/api/legend?dataset={REFERENCE}"):
        r = m.get(path, headers=ALICE)
        assert r.status_code == 200, (path, r.data[:300])
        assert (r.headers.get("Content-Security-Policy"), r.headers.get("X-Content-Type-Options")) == (
            "sandbox", "nosniff"), path
    for path in ("/", "/static/js/main.js", "/vendor/leaflet/leaflet.js"):
        r = m.get(path, headers=ALICE)
        assert r.status_code == 200 and r.headers.get("X-Content-Type-Options") == "nosniff", path
        assert "Content-Security-Policy" not in r.headers, path


def test_legend_names_come_from_the_raster_tags_or_gdal_category_names(tmp_path):
    """Issue 16.3: the legend names a label raster's classes where the raster says them: the
    CLASS_NAMES tag (of the file or its band) or GDAL's category names in ``.aux.xml``."""
    import rasterio
    from rasterio.transform import from_origin

    from geoml_hub.map import tiles

    data = np.array([[0, 1, 2], [2, 3, 3]], dtype=np.uint8)
    profile = {"driver": "GTiff", "width": 3, "height": 2, "count": 1, "dtype": "uint8", "crs": "EPSG:32615",
               "transform": from_origin(500000, 1800000, 30, 30), "nodata": 0}
    plain = tmp_path / "plain.tif"
    with rasterio.open(plain, "w", **profile) as dst:
        dst.write(data, 1)
    assert [(c["code"], c["name"]) for c in tiles.class_table(plain)] == [(1, "1"), (2, "2"), (3, "3")]
    (tmp_path / "plain.tif.aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="1"><CategoryNames><Category></Category><Category>forest</Category>'
        '<Category>water</Category><Category>herbaceous</Category></CategoryNames></PAMRasterBand></PAMDataset>')
    assert [(c["code"], c["name"]) for c in tiles.class_table(plain)] == [(1, "forest"), (2, "water"),
                                                                        (3, "herbaceous")]
    tagged = tmp_path / "tagged.tif"
    with rasterio.open(tagged, "w", **profile) as dst:
        dst.write(data, 1)
        dst.update_tags(1, CLASS_NAMES=json.dumps({"1": "urban", "3": "barren"}))
    assert [(c["code"], c["name"]) for c in tiles.class_table(tagged)] == [(1, "urban"), (2, "2"), (3, "barren")]



def test_confidence_rasters_are_a_red_to_green_ramp_transparent_where_nodata(pixel_model, tmp_path):
    """Issue 15.4: the confidence raster as a layer: red where the model is unsure, green where it is
    sure, transparent where the scene is nodata."""
    from geoml_hub.classification import classify_scene
    from geoml_hub.map import tiles
    from helpers import write_raster

    with rasterio.open(SCENE_1999) as src:
        data, profile = src.read(), src.profile
    data[:, :40, :60] = -9999
    scene = write_raster(tmp_path / "holed.tif", data, crs=profile["crs"], transform=profile["transform"],
                         nodata=-9999)
    classify_scene(pixel_model.model_path, scene, tmp_path / "c.tif", device="cpu", compatibility_check=False,
                   confidence=tmp_path / "conf.tif")
    info = tiles.raster_info(tmp_path / "conf.tif", "jobs/x/conf.tif")
    assert info["kind"] == "confidence" and tiles.raster_info(tmp_path / "c.tif", "jobs/x/c.tif")["kind"] == "labels"
    with rasterio.open(tmp_path / "conf.tif") as src:
        conf = src.read(1)
    img = np.asarray(Image.open(io.BytesIO(tiles.render_preview(tmp_path / "conf.tif", "confidence"))).convert("RGBA"))
    assert img.shape[:2] == conf.shape  # 250 x 250: the preview is the raster's own grid
    assert (img[:40, :60, 3] == 0).all() and (img[conf >= 0][:, 3] == 255).all()
    rgb = img[..., :3].astype(int)
    unsure, sure = (conf >= 0) & (conf < 0.3), conf > 0.8
    assert unsure.any() and sure.any()
    assert (rgb[unsure, 0] > rgb[unsure, 1]).all() and (rgb[sure, 1] > rgb[sure, 0]).all()
    x, y, z = tile_of(*np.mean(np.reshape(info["bounds"], (2, 2)), axis=0), 14)
    tile = np.asarray(Image.open(io.BytesIO(tiles.render_tile(tmp_path / "conf.tif", z, x, y, "confidence"))))
    assert tile.shape[:2] == (256, 256)
