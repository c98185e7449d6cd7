"""Helpers of the tests that start ``geoml-hub up`` (tests/test_hub.py, test_cross_site.py,
test_map_browser.py): start and stop a hub, log in, tokens, and code run in a user's kernel."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from helpers import ACCOUNT_PREFIX, CONSOLE_SCRIPT
from wps_server import DATA

LABELS = "data/landsat7_chiapas/training_data.gtif"
CULL_TIMEOUT = 40
PASSWORDS = {"alice": "alice-Rs2-passw0rd", "bob": "bob-Landsat7-passw0rd"}


ROOT = os.geteuid() == 0


def shared_dirs(base: Path) -> list:
    """As root, ``geoml-hub up`` gives each user a system account: the test's homes and public
    directory sit in ``base`` (which the users' accounts can traverse, unlike pytest's 0700
    temporary directories)."""
    if not ROOT:
        return []
    base.mkdir(parents=True, exist_ok=True)
    config = base / "accounts.py"
    config.write_text(f"c.GeomlLocalSpawner.system_user_prefix = {ACCOUNT_PREFIX!r}\n")
    return ["--homes-dir", str(base / "homes"), "--public-dir", str(base / "public"), "--config", str(config)]


def up(state_dir: Path, port: int, base: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CONSOLE_SCRIPT), "up", "--detach", "--state-dir", str(state_dir), "--port", str(port),
                           "--data-root", str(DATA), "--cull-timeout", str(CULL_TIMEOUT), "--cull-every", "5",
                           *shared_dirs(base)], capture_output=True, text=True, timeout=180)



def down(state_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CONSOLE_SCRIPT), "down", "--state-dir", str(state_dir)], capture_output=True,
                          text=True, timeout=180)


def hub_tree(state_dir: Path):
    from geoml_hub.hub.up import running
    from geoml_hub.web.proctree import descendants

    pid, ticks = running(state_dir)
    return [(pid, ticks)] + descendants(pid)


def alive(pid, ticks):
    from geoml_hub.web.proctree import alive as process_alive

    return process_alive(pid, ticks)


def login(url: str, user: str, password: str) -> requests.Session:
    s = requests.Session()
    s.get(url + "/hub/login", timeout=30)
    r = s.post(url + "/hub/login", data={"username": user, "password": password, "_xsrf": s.cookies.get("_xsrf")},
               allow_redirects=False, timeout=30)
    s.login_status = r.status_code
    s.login_text = r.text
    return s


def sign_up(url: str, user: str, password: str) -> requests.Response:
    """NativeAuthenticator's sign-up form, as a new user fills it in."""
    s = requests.Session()
    s.get(url + "/hub/signup", timeout=30)
    return s.post(url + "/hub/signup", data={"username": user, "signup_password": password,
                                             "signup_password_confirmation": password,
                                             "_xsrf": s.cookies.get("_xsrf")}, timeout=30)


def api(url: str, token: str, method: str, path: str, **kw):
    return requests.request(method, f"{url}/hub/api{path}", headers={"Authorization": f"token {token}"},
                            timeout=60, **kw)


def admin_token(hub) -> str:
    if "admin_token" not in hub:
        pw = (hub["state"] / "admin_password").read_text().strip()
        s = login(hub["url"], "admin", pw)
        assert s.login_status == 302
        r = s.post(hub["url"] + "/hub/api/users/admin/tokens", json={"note": "tests"},
                   headers={"X-XSRFToken": s.cookies.get("_xsrf")}, timeout=30)
        assert r.status_code == 201, r.text
        hub["admin_token"] = r.json()["token"]
    return hub["admin_token"]


def user_token(hub, user: str) -> str:
    key = f"token_{user}"
    if key not in hub:
        r = api(hub["url"], admin_token(hub), "POST", f"/users/{user}/tokens", json={"note": "tests"})
        assert r.status_code == 201, r.text
        hub[key] = r.json()["token"]
    return hub[key]


def wait_server(hub, user: str, ready: bool = True, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = api(hub["url"], admin_token(hub), "GET", f"/users/{user}").json()
        server = model.get("servers", {}).get("")
        if ready and server and server.get("ready"):
            return model
        if not ready and not server:
            return model
        time.sleep(0.5)
    raise AssertionError(f"server of {user} not {'ready' if ready else 'stopped'} after {timeout} s")


async def _execute(url: str, user: str, token: str, code: str, wait: bool, timeout: float):
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    headers = {"Authorization": f"token {token}"}
    r = requests.post(f"{url}/user/{user}/api/kernels", headers=headers, json={"name": "python3"}, timeout=60)
    assert r.status_code == 201, r.text
    kid = r.json()["id"]
    ws_url = url.replace("http://", "ws://") + f"/user/{user}/api/kernels/{kid}/channels"
    ws = await websocket_connect(HTTPRequest(ws_url, headers=headers))
    msg_id = uuid.uuid4().hex
    await ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "username": user, "session": uuid.uuid4().hex, "msg_type": "execute_request",
                   "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    if not wait:
        return kid, ws, None
    out, error, replied, idle = [], None, False, False
    deadline = time.monotonic() + timeout
    # shell (execute_reply) and iopub (outputs, then status idle) are separate channels: wait for
    # both, or outputs can arrive after the reply
    while not (replied and idle) and time.monotonic() < deadline:
        raw = await asyncio.wait_for(ws.read_message(), timeout=deadline - time.monotonic())
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["header"]["msg_type"]
        if kind == "stream":
            out.append(msg["content"]["text"])
        elif kind == "error":
            error = "\n".join(msg["content"]["traceback"])
        elif kind == "execute_reply":
            replied = True
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
    ws.close()
    return kid, None, ("".join(out), error)


def run_in_kernel(hub, user: str, token: str, code: str, timeout: float = 300.0):
    """Execute ``code`` in a new kernel of the user's server (Jupyter server kernel API)."""
    _, _, (out, error) = asyncio.run(_execute(hub["url"], user, token, code, True, timeout))
    assert error is None, error
    return out


# -- spawners without a hub (tests/test_profiles.py, test_helm.py) ----------------------------
def run(coro):
    return asyncio.run(coro)


def _http_error(coro):
    from tornado import web

    with pytest.raises(web.HTTPError) as err:
        run(coro)
    return err.value.status_code, err.value.jupyterhub_message


async def _pod(spawner_class, user, user_options, config=None):
    from jupyterhub.objects import Hub
    from traitlets.config import Config

    sp = spawner_class(config=config or Config(), hub=Hub(), user=user, api_token="x", oauth_client_id="y",
                       _mock=True)
    sp.user_options = user_options
    await sp.load_user_options()
    pod = await sp.get_pod_manifest()
    return sp, sp.api.api_client.sanitize_for_serialization(pod)
