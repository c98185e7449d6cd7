"""The web map in a real browser (Debian's Chromium driven by Playwright, headless) on the real
stack of ``geoml-hub up``: JupyterHub with configurable-http-proxy, the native authenticator,
the WPS and the map as hub services. Nothing is mocked.

Alice logs in through the hub, opens the map, turns on the Chiapas scene (its pixels are
checked in a screenshot), draws one polygon per class over the reference regions, saves them,
runs extract -> balance -> train -> classify -> validate from the map's process panel, sees the
classification layer and the QC panel, whose overall accuracy equals the WPS output. Bob sees
none of Alice's jobs. Screenshots go to ``$GEOML_SCREENSHOTS`` when it is set (docs/images).
"""

from __future__ import annotations

import io
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
import requests
from PIL import Image
from playwright import sync_api as playwright_api
from rasterio.warp import transform as warp_transform
from scipy import ndimage

from conftest import CHIAPAS_NAMES, LABELS
from helpers import CHROMIUM
from hubtools import PASSWORDS, admin_token, api, down, login, sign_up, up, user_token
from wps_server import DATA, NS, free_port

pytestmark = pytest.mark.slow

SCENE = "data/landsat7_chiapas/LE70220491999322EDC01_stack.gtif"
REFERENCE = "data/landsat7_chiapas/training_data.gtif"
STEP_TIMEOUT_MS = 240_000
SHOTS = os.environ.get("GEOML_SCREENSHOTS")
#: a page function: is the layer's checkbox (argument: its dataset) there and checked?
CHECKED = "(d) => [...document.querySelectorAll('input[data-layer]')].some(i => i.dataset.layer === d && i.checked)"


@pytest.fixture(scope="module")
def hub(tmp_path_factory, shared_base):
    state = tmp_path_factory.mktemp("maphub") / "state"
    port = free_port()
    res = up(state, port, shared_base / "maphub")
    assert res.returncode == 0, res.stdout + res.stderr + (state / "hub.log").read_text()[-4000:]
    hub = {"state": state, "port": port, "url": f"http://127.0.0.1:{port}"}
    for user, pw in PASSWORDS.items():   # sign up, then the admin approves
        assert sign_up(hub["url"], user, pw).status_code == 200
    admin = login(hub["url"], "admin", (state / "admin_password").read_text().strip())
    for user in PASSWORDS:
        assert admin.get(f"{hub['url']}/hub/authorize/{user}", timeout=30).status_code == 200
    yield hub
    assert down(state).returncode == 0


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (the README's test command does)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"])
        yield b
        b.close()


def open_map(browser, hub, user):
    """A new browser context: log in at /hub/login, then open the map (OAuth through the hub)."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(hub["url"]) else None)
    page.goto(hub["url"] + "/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", PASSWORDS[user])
    page.click("#login_submit")
    page.wait_for_url("**/hub/**")
    page.goto(hub["url"] + "/services/map/")
    page.wait_for_selector("#user")
    page.wait_for_function("document.querySelector('#user').textContent.includes(%r)" % user)
    page.outside_requests = outside
    return ctx, page


def tiles_loaded(page):
    """Wait until every tile image of the map has loaded and faded in; no tile may fail (the
    layers ask only for tiles inside their bounds, which all have data)."""
    page.wait_for_function(
        "() => { const t = [...document.querySelectorAll('#map img.leaflet-tile')];"
        " return t.length > 0 && t.every(i => i.complete); }", timeout=60_000)
    page.wait_for_timeout(800)
    failed = page.evaluate("[...document.querySelectorAll('#map img.leaflet-tile')]"
                           ".filter(i => !i.classList.contains('leaflet-tile-loaded')).map(i => i.src)")
    assert not failed, f"tiles that did not load: {failed}"


def shot(page, name, selector="#map"):
    png = page.locator(selector).screenshot()
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        (Path(SHOTS) / name).write_bytes(png)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def class_boxes():
    """For each class: the lon/lat corners of its largest reference region's box (grown by one
    pixel), where a user would digitise a training polygon."""
    with rasterio.open(LABELS) as src:
        labels, transform, crs = src.read(1), src.transform, src.crs
    boxes = {}
    for code, name in CHIAPAS_NAMES.items():
        lab, n = ndimage.label(labels == code, structure=np.ones((3, 3)))
        sizes = ndimage.sum(np.ones_like(labels), lab, range(1, n + 1))
        rows, cols = np.where(lab == int(np.argmax(sizes)) + 1)
        r0, r1, c0, c1 = rows.min() - 1, rows.max() + 2, cols.min() - 1, cols.max() + 2
        corners = [transform @ (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))]
        lons, lats = warp_transform(crs, "EPSG:4326", [x for x, _ in corners], [y for _, y in corners])
        boxes[name] = list(zip(lats, lons))
    return boxes


def scene_centre():
    """The scene's centre as (lat, lon)."""
    with rasterio.open(DATA / SCENE.split("/", 1)[1]) as src:
        b = src.bounds
        lons, lats = warp_transform(src.crs, "EPSG:4326", [(b.left + b.right) / 2], [(b.bottom + b.top) / 2])
    return lats[0], lons[0]


def draw_polygon(page, latlngs):
    """Click the corners on the map (Leaflet.draw), then the first corner again to close it."""
    box = page.locator("#map").bounding_box()
    page.click("#draw-polygon")
    points = page.evaluate("(ll) => ll.map(p => window.geomlMap.latLngToContainerPoint(p))",
                           [list(p) for p in latlngs])
    for pt in points + points[:1]:
        page.mouse.click(box["x"] + pt["x"], box["y"] + pt["y"])
        page.wait_for_timeout(150)


def run_process(page, identifier, values):
    """Choose a process, fill the form (other fields keep their pre-filled values, e.g. the
    previous step's output), run it and wait for its final status; returns the job id."""
    try:
        page.wait_for_selector(f"#process-select option[value={identifier!r}]", state="attached", timeout=60_000)
    except playwright_api.TimeoutError:
        options = page.eval_on_selector_all("#process-select option", "os => os.map(o => o.value)")
        raise AssertionError(f"{identifier} is not in the process list {options}; the page says: "
                             f"{page.text_content('body')[-1500:]}") from None
    page.select_option("#process-select", identifier)
    page.wait_for_selector(f"#process-form[data-process={identifier!r}] [name]")
    for name, value in values.items():
        field = page.locator(f"#process-form [name={name!r}]")
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(str(value))
        else:
            field.fill(str(value))
    before = page.get_attribute("#job-progress", "data-job")
    page.click("#run-process")
    page.wait_for_function(
        "([before]) => { const p = document.querySelector('#job-progress');"
        " return p.dataset.job && p.dataset.job !== before && ['succeeded', 'failed'].includes(p.dataset.status); }",
        arg=[before], timeout=STEP_TIMEOUT_MS)
    status = page.get_attribute("#job-progress", "data-status")
    assert status == "succeeded", f"{identifier}: {page.text_content('#job-progress')} {page.text_content('#message')}"
    return page.get_attribute("#job-progress", "data-job")


def wps_literal(hub, user, job_id, name):
    """A literal output of a job, read from its status document with the user's own token."""
    token = user_token(hub, user)
    doc = requests.get(f"{hub['url']}/services/wps/outputs/{job_id}.xml", timeout=30,
                       headers={"Authorization": f"token {token}"})
    assert doc.status_code == 200, doc.text
    for out in ET.fromstring(doc.content).findall(".//wps:Output", NS):
        if out.findtext("ows:Identifier", "", NS) == name:
            return out.findtext("wps:Data/wps:LiteralData", "", NS)
    raise AssertionError(f"no output {name} in job {job_id}")


def test_the_whole_loop_in_the_browser(hub, browser):
    ctx, page = open_map(browser, hub, "alice")
    try:
        # the map opens on the first scene, zoomed to it (issue 16.3: not an empty grey canvas)
        page.wait_for_selector(f"input[data-layer={SCENE!r}]")
        page.wait_for_function(CHECKED, arg=SCENE)
        tiles_loaded(page)
        assert page.evaluate("window.geomlMap.getZoom()") >= 8
        assert page.evaluate("window.geomlMap.getBounds().contains(L.latLng(%r, %r))" % scene_centre())
        # the scene layer renders: real pixels, not an empty map
        page.uncheck(f"input[data-layer={SCENE!r}]")
        page.wait_for_timeout(500)
        blank = shot(page, "map-empty.png")
        colours, counts = np.unique(blank.reshape(-1, 3), axis=0, return_counts=True)
        background = colours[np.argmax(counts)]   # the empty map's own colour
        page.check(f"input[data-layer={SCENE!r}]")
        tiles_loaded(page)
        scene = shot(page, "map-scene.png")
        changed = np.abs(scene.astype(int) - background.astype(int)).sum(axis=2) > 30
        assert changed.mean() > 0.3, f"the scene covers {changed.mean():.0%} of the map"
        assert scene[changed].std(axis=0).min() > 10, "the scene is flat: no stretch or no data"

        # one polygon per class over its reference region, then save
        for name, latlngs in class_boxes().items():
            page.select_option("#sample-class", "__new__")
            page.fill("#new-class-name", name)
            page.click("#add-class")
            draw_polygon(page, latlngs)
        page.wait_for_function("document.querySelector('#samples-count').textContent.startsWith('5 polygons')")
        page.fill("#samples-name", "chiapas.geojson")
        page.click("#save-samples")
        page.wait_for_function("document.querySelector('#samples-saved').textContent.length > 0")
        polygons = page.text_content("#samples-saved").strip()
        assert polygons == "workspace/alice/chiapas.geojson"
        shot(page, "map-polygons.png")

        # extract -> balance -> train -> classify -> validate, from the process panel
        extract = run_process(page, "extract_samples", {"scene": SCENE, "reference": polygons})
        assert int(wps_literal(hub, "alice", extract, "n_classes")) == 5
        run_process(page, "balance_samples", {})
        run_process(page, "train_model", {"epochs": 3, "device": "cpu"})
        classify = run_process(page, "classify_scene", {"scene": SCENE, "device": "cpu"})
        legend = page.locator(f".legend[data-legend-for='jobs/{classify}/classification.tif']")
        legend.locator(".legend-item").first.wait_for(timeout=60_000)   # loaded after the element appears
        assert sorted(legend.inner_text().split()) == sorted(CHIAPAS_NAMES.values())
        tiles_loaded(page)
        shot(page, "map-classification.png")
        # issue 15: the confidence raster joins the layer list (off) with its ramp; the verdict is an output
        confidence = f"jobs/{classify}/confidence.tif"
        page.wait_for_selector(f"input[data-layer={confidence!r}]")
        assert not page.is_checked(f"input[data-layer={confidence!r}]")
        assert page.locator(f".legend[data-legend-for={confidence!r}] .ramp").count() == 1
        verdict = wps_literal(hub, "alice", classify, "compatible")
        assert verdict in ("compatible", "not compatible")
        assert page.text_content("#job-result tr[data-output='compatible'] td").strip() == verdict
        page.check(f"input[data-layer={confidence!r}]")
        tiles_loaded(page)
        shot(page, "map-confidence.png")
        page.uncheck(f"input[data-layer={confidence!r}]")
        validate = run_process(page, "validate_classification", {"reference": REFERENCE})
        page.wait_for_selector("#qc-oa")
        oa = wps_literal(hub, "alice", validate, "overall_accuracy")
        assert page.get_attribute("#qc-oa", "data-value") == oa
        # shown rounded to 3 decimals, the exact value kept in data-value and the tooltip
        assert page.text_content("#qc-oa").strip() == f"{float(oa):.3f}"
        kappa = page.get_attribute("#qc-kappa", "data-value")
        assert kappa and page.text_content("#qc-kappa").strip() == f"{float(kappa):.3f}"
        assert page.locator("#qc-table tr").count() >= 6   # header + 5 classes
        page.wait_for_function("document.querySelector('#qc-heatmap').naturalWidth > 0")
        # the confidence input was filled from the classification job: accuracy by confidence
        page.wait_for_function("document.querySelector('#qc-reliability').naturalWidth > 0")
        shot(page, "map-qc.png", "#qc-panel")
        # publish the QC job from the job list: it becomes a shared result
        page.click("#refresh-jobs")
        page.click(f"tr[data-job='{validate}'] button[data-action='publish']")
        page.wait_for_selector(f"#results-list tr[data-result='{validate}']")
        # the Jobs table keeps words whole: each header and status is one line ("Statu/s", "succe/eded")
        split = page.evaluate("""() => [...document.querySelectorAll(
              '#jobs-list thead th, #jobs-list tbody td:nth-child(2), #results-list thead th')]
            .filter(c => c.textContent.trim() && !c.textContent.trim().includes(' '))
            .filter(c => { const r = document.createRange(); r.selectNodeContents(c);
                           return new Set([...r.getClientRects()].map(x => Math.round(x.top))).size > 1; })
            .map(c => c.textContent.trim())""")
        assert not split, f"words split over lines in the job tables: {split}"
        assert not page.outside_requests, f"requests outside the hub: {page.outside_requests[:5]}"

        # the layer choice survives a reload (localStorage): the reference labels, not the scene
        for dataset in page.evaluate("[...document.querySelectorAll('#layers-list input[data-layer]:checked')]"
                                     ".map(i => i.dataset.layer)"):
            page.uncheck(f"#layers-list input[data-layer={dataset!r}]")
        page.check(f"input[data-layer={REFERENCE!r}]")
        page.reload()
        page.wait_for_function(CHECKED, arg=REFERENCE)
        checked = page.evaluate("[...document.querySelectorAll('#layers-list input[data-layer]:checked')]"
                                ".map(i => i.dataset.layer)")
        assert checked == [REFERENCE]
        # its legend: one entry per class, each with its name or, where the raster has none, "class N"
        legend = page.locator(f".legend[data-legend-for={REFERENCE!r}] .legend-item")
        legend.first.wait_for()
        assert legend.count() == len(CHIAPAS_NAMES)
        assert all(t.strip() for t in legend.all_inner_texts())
    finally:
        ctx.close()
    hub["alice_jobs"] = [extract, validate]


def test_another_user_does_not_see_the_jobs(hub, browser):
    alice_jobs = hub.get("alice_jobs")
    assert alice_jobs, "the first test did not run"
    ctx, page = open_map(browser, hub, "bob")
    try:
        page.wait_for_selector("#jobs-list")
        page.wait_for_timeout(1000)
        for job in alice_jobs:
            assert page.locator(f"tr[data-job='{job}']").count() == 0
        # ... but the result alice published, with its outputs
        extract, validate = alice_jobs
        page.click(f"#results-list tr[data-result='{validate}'] button[data-action='outputs']")
        page.wait_for_selector("#jobs-output tr[data-output='overall_accuracy']")
        # the job-outputs table shows the figure as people read it, the full value on hover
        cell = page.locator("#jobs-output tr[data-output='overall_accuracy'] td")
        shown, full = cell.inner_text().strip(), cell.get_attribute("title")
        assert len(shown.split(".")[-1]) <= 3, shown
        assert full is None or abs(float(full) - float(shown)) < 5e-4, (shown, full)
        status = page.evaluate("fetch('api/wps/jobs/%s').then(r => r.status)" % alice_jobs[0])
        assert status == 404
        tile = page.evaluate("fetch('api/layer-info?dataset=jobs/%s/reference_polygons.tif').then(r => r.status)"
                             % alice_jobs[0])
        assert tile == 404
    finally:
        ctx.close()
    # and the hub API agrees: Alice's jobs are hers
    jobs = requests.get(hub["url"] + "/services/wps/jobs", timeout=30,
                        headers={"Authorization": f"token {user_token(hub, 'alice')}"}).json()["jobs"]
    assert {j["owner"] for j in jobs} == {"alice"}
    assert api(hub["url"], admin_token(hub), "GET", "/users/bob").status_code == 200
