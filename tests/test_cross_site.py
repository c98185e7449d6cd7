"""Cross-site requests against the real stack of ``geoml-hub up`` (JupyterHub, the WPS and the map
as hub services; nothing mocked): alice's login cookie alone must not let another site start,
cancel, publish or write anything, directly or through the map's proxy.

A browser sends the service's cookie with every request to it, also one that another site's
page starts (a link, an image, a form). Such a request is told apart by its ``Origin`` (or
``Referer``, ``Sec-Fetch-Site``); an Execute by GET with the cookie is refused outright. A token
in the ``Authorization`` header (notebooks) is never sent by a browser on its own and passes.
"""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest
import requests

from hubtools import PASSWORDS, down, login, sign_up, up, user_token
from wps_server import free_port

pytestmark = pytest.mark.slow

LABELS = "data/landsat7_chiapas/training_data.gtif"
EVIL = "http://evil.example"
POLYGONS = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"class": "water"},
            "geometry": {"type": "Polygon", "coordinates": [[[-93, 16], [-92.9, 16], [-92.9, 16.1], [-93, 16]]]}}]}


@pytest.fixture(scope="module")
def hub(tmp_path_factory, shared_base):
    state = tmp_path_factory.mktemp("csrfhub") / "state"
    port = free_port()
    res = up(state, port, shared_base / "csrfhub")
    assert res.returncode == 0, res.stdout + res.stderr + (state / "hub.log").read_text()[-4000:]
    hub = {"state": state, "port": port, "url": f"http://127.0.0.1:{port}"}
    assert sign_up(hub["url"], "alice", PASSWORDS["alice"]).status_code == 200
    admin = login(hub["url"], "admin", (state / "admin_password").read_text().strip())
    assert admin.get(f"{hub['url']}/hub/authorize/alice", timeout=30).status_code == 200
    yield hub
    assert down(state).returncode == 0


@pytest.fixture(scope="module")
def alice(hub):
    """alice's browser after logging in to the hub, the WPS and the map (OAuth cookies)."""
    s = login(hub["url"], "alice", PASSWORDS["alice"])
    assert s.login_status == 302
    for service in ("wps/jobs", "map/"):
        r = s.get(f"{hub['url']}/services/{service}", headers={"Accept": "text/html"}, timeout=60)
        assert r.status_code == 200, r.text[:500]
    return s


def query(identifier, inputs, async_=False):
    params = {"service": "WPS", "request": "Execute", "version": "1.0.0", "identifier": identifier}
    if async_:
        params.update(storeExecuteResponse="true", status="true")
    data = ";".join(f"{k}={urllib.parse.quote(str(v), safe='/:')}" for k, v in inputs.items())
    return urllib.parse.urlencode(params) + "&DataInputs=" + data


def jobs_of(hub, token):
    r = requests.get(f"{hub['url']}/services/wps/jobs", headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200, r.text
    return {j["job_id"]: j for j in r.json()["jobs"]}


def test_login_cookies_are_same_site_strict(hub, alice):
    cookies = {c.name: c for c in alice.cookies if c.name.startswith("geoml-")}
    for name in ("geoml-wps-token", "geoml-map-token"):
        assert name in cookies, sorted(cookies)
        assert cookies[name].get_nonstandard_attr("SameSite") == "Strict"
        assert cookies[name].has_nonstandard_attr("HttpOnly")


def test_cookie_alone_cannot_change_state_from_another_site(hub, alice):
    url = hub["url"]
    token = user_token(hub, "alice")
    before = set(jobs_of(hub, token))
    execute = query("validate_classification", {"classification": LABELS, "reference": LABELS})

    # an Execute by GET with the cookie: refused, whatever the Origin, directly and through the map
    for path in (f"/services/wps/wps?{execute}", f"/services/map/api/wps/wps?{execute}"):
        for headers in ({"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"}, {}):
            r = alice.get(url + path, headers=headers, timeout=60)
            assert r.status_code == 403, (path, headers, r.status_code, r.text[:300])
            assert "Execute by GET" in r.text, r.text[:300]
    assert set(jobs_of(hub, token)) == before, "a cross-site GET Execute created a job"
    # the same GET Execute with a token (a notebook) still runs
    r = requests.get(f"{url}/services/wps/wps?{execute}", headers={"Authorization": f"token {token}"}, timeout=120)
    assert r.status_code == 200 and b"ProcessSucceeded" in r.content, r.text[:500]
    done = (set(jobs_of(hub, token)) - before).pop()

    # a POST Execute with the cookie from another site: refused; from the map's own page: runs
    body = ('<?xml version="1.0" encoding="UTF-8"?><wps:Execute service="WPS" version="1.0.0" '
            'xmlns:wps="http://www.opengis.net/wps/1.0.0" xmlns:ows="http://www.opengis.net/ows/1.1">'
            '<ows:Identifier>validate_classification</ows:Identifier><wps:DataInputs>'
            + "".join(f"<wps:Input><ows:Identifier>{k}</ows:Identifier><wps:Data><wps:LiteralData>{LABELS}"
                      "</wps:LiteralData></wps:Data></wps:Input>" for k in ("classification", "reference"))
            + "</wps:DataInputs></wps:Execute>")
    xml = {"Content-Type": "text/xml"}
    for path in ("/services/wps/wps", "/services/map/api/wps/wps"):
        r = alice.post(url + path, data=body, headers=dict(xml, Origin=EVIL), timeout=60)
        assert r.status_code == 403, (path, r.status_code, r.text[:300])
        r = alice.post(url + path, data=body, headers=xml, timeout=60)  # no Origin, no Referer: not proven
        assert r.status_code == 403, (path, r.status_code, r.text[:300])
    assert set(jobs_of(hub, token)) == before | {done}
    r = alice.post(url + "/services/map/api/wps/wps", data=body, headers=dict(xml, Origin=url), timeout=120)
    assert r.status_code == 200 and b"ProcessSucceeded" in r.content, r.text[:500]

    # publish and workspace writes from another site: refused; from the map's page: done
    for method, path, kw in (("POST", f"/services/wps/jobs/{done}/publish", {}),
                             ("POST", f"/services/map/api/wps/jobs/{done}/publish", {}),
                             ("PUT", "/services/wps/workspace/evil.geojson", {"data": json.dumps(POLYGONS)}),
                             ("PUT", "/services/map/api/wps/workspace/evil.geojson", {"data": json.dumps(POLYGONS)})):
        r = alice.request(method, url + path, headers={"Origin": EVIL}, timeout=60, **kw)
        assert r.status_code == 403, (method, path, r.status_code, r.text[:300])
        r = alice.request(method, url + path, headers={"Referer": "http://evil.example/page"}, timeout=60, **kw)
        assert r.status_code == 403, (method, path, r.status_code, r.text[:300])
    assert not jobs_of(hub, token)[done]["published"]
    assert alice.get(url + "/services/wps/workspace", timeout=30).json()["files"] == []
    r = alice.put(url + "/services/map/api/wps/workspace/mine.geojson", data=json.dumps(POLYGONS),
                  headers={"Origin": url}, timeout=60)
    assert r.status_code == 200, r.text[:300]


def test_cross_site_cancel_leaves_the_job_running(hub, alice):
    url = hub["url"]
    token = user_token(hub, "alice")
    r = requests.get(f"{url}/services/wps/wps?" + query("train_model", {"samples": "data/eurosat_ms", "family": "cnn",
                                                                       "epochs": 300,
                                                                       "patience": 300}, async_=True),
                     headers={"Authorization": f"token {token}"}, timeout=60)
    assert r.status_code == 200 and b"statusLocation" in r.content, r.text[:500]
    job = next(j for j, v in jobs_of(hub, token).items() if v["process"] == "train_model")
    try:
        for method, path in (("POST", f"/services/wps/jobs/{job}/cancel"), ("DELETE", f"/services/wps/jobs/{job}"),
                             ("POST", f"/services/map/api/wps/jobs/{job}/cancel")):
            r = alice.request(method, url + path, headers={"Origin": EVIL}, timeout=60)
            assert r.status_code == 403, (method, path, r.status_code, r.text[:300])
            r = alice.request(method, url + path, headers={"Sec-Fetch-Site": "cross-site"}, timeout=60)
            assert r.status_code == 403, (method, path, r.status_code, r.text[:300])
        time.sleep(0.5)
        assert jobs_of(hub, token)[job]["status"] in ("queued", "running"), jobs_of(hub, token)[job]
        # the map's own page cancels it (a fetch POST carries the page's Origin)
        r = alice.post(f"{url}/services/map/api/wps/jobs/{job}/cancel", headers={"Origin": url}, timeout=60)
        assert r.status_code == 200 and r.json()["status"] == "dismissed", r.text[:300]
    finally:
        requests.post(f"{url}/services/wps/jobs/{job}/cancel", headers={"Authorization": f"token {token}"},
                      timeout=60)


def test_strict_cookie_login_works_from_a_link_on_another_site(hub, tmp_path):
    """SameSite=Strict does not break the OAuth flow: alice, logged in to the hub, follows a link
    to the map on another site's page (localhost is another site than 127.0.0.1); the redirect
    chain map -> hub -> oauth_callback started cross-site, yet the map opens logged in (the
    callback's continuation page is a same-site navigation that carries the new cookie)."""
    import http.server
    import threading

    from playwright import sync_api as playwright_api

    from helpers import CHROMIUM

    page_html = f'<html><body><a id="go" href="{hub["url"]}/services/map/">the map</a></body></html>'.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page_html)

        def log_message(self, *args):
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_context().new_page()
            page.goto(hub["url"] + "/hub/login")
            page.fill("#username_input", "alice")
            page.fill("#password_input", PASSWORDS["alice"])
            page.click("#login_submit")
            page.wait_for_url("**/hub/**")
            page.goto(f"http://localhost:{other.server_address[1]}/")
            page.click("#go")
            page.wait_for_function("document.querySelector('#user') && "
                                   "document.querySelector('#user').textContent.includes('alice')", timeout=60_000)
            assert page.url.startswith(hub["url"] + "/services/map/"), page.url
            cookies = {c["name"]: c for c in page.context.cookies()}
            assert cookies["geoml-map-token"]["sameSite"] == "Strict"
            browser.close()
    finally:
        other.shutdown()
        other.server_close()
