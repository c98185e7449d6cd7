"""``geoml-hub up`` end to end with the real components: JupyterHub, configurable-http-proxy
(from npm), NativeAuthenticator, the local spawner, jupyter-server kernels, the WPS service
and jupyterhub-idle-culler. Nothing is mocked.

One hub is started for the module (loopback, a free port, a short idle-culler timeout);
the tests run in file order, like a session of two researchers and an admin.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import stat
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

from helpers import ACCOUNT_PREFIX, CONSOLE_SCRIPT
from hubtools import (CULL_TIMEOUT, LABELS, PASSWORDS, ROOT, _execute, admin_token, alive, api, down,  # noqa: F401
                      hub_tree, login, run_in_kernel, shared_dirs, sign_up, up, user_token, wait_server)
from wps_server import free_port

pytestmark = pytest.mark.slow

STATE: dict = {}


@pytest.fixture(scope="module")
def hub(tmp_path_factory, shared_base):
    # the state directory's own mode (0700) must keep the users out: it is not inside a
    # private directory here, as it would not be in /srv or /var/lib
    state = shared_base / "state"
    port = free_port()
    res = up(state, port, shared_base)
    assert res.returncode == 0, res.stdout + res.stderr + (state / "hub.log").read_text()[-4000:]
    url = f"http://127.0.0.1:{port}"
    STATE.update(state=state, port=port, url=url, up_output=res.stdout, base=shared_base)
    yield STATE
    tree = hub_tree(state) if (state / "up.pid").exists() else []
    res = down(state)
    assert res.returncode == 0, res.stderr
    left = [(p, t) for p, t in tree if alive(p, t)]
    assert not left, f"processes left after geoml-hub down: {left}"


# -- the session ------------------------------------------------------------------------------
def test_up_prints_url_and_creates_the_admin(hub):
    assert f"geoml-hub is running at {hub['url']}/" in hub["up_output"]
    pw = hub["state"] / "admin_password"
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600 and len(pw.read_text().strip()) >= 16
    assert str(pw) in hub["up_output"]
    assert requests.get(hub["url"] + "/hub/api", timeout=30).json()["version"]
    # no shared dummy password: a wrong one is refused
    assert login(hub["url"], "admin", "admin").login_status != 302


def test_sign_up_approval_and_login(hub):
    url = hub["url"]
    for user, pw in PASSWORDS.items():
        assert sign_up(url, user, pw).status_code == 200
        early = login(url, user, pw)
        assert early.login_status != 302, "logged in before approval"
        # the right password before approval: told that approval is pending (issue 16.3) ...
        assert f"Your account {user} is waiting for an administrator&#39;s approval" in early.login_text
        # ... a wrong one: only the usual message, which says nothing about the account
        wrong = login(url, user, pw + "-wrong")
        assert "Invalid username or password" in wrong.login_text and "approval" not in wrong.login_text
    admin = login(url, "admin", (hub["state"] / "admin_password").read_text().strip())
    for user in PASSWORDS:
        r = admin.get(f"{url}/hub/authorize/{user}", timeout=30)
        assert r.status_code == 200
    for user, pw in PASSWORDS.items():
        assert login(url, user, pw).login_status == 302, f"{user} cannot log in after approval"
    assert login(url, "alice", "wrong-password-1").login_status != 302


def test_spawn_with_cpu_profile_and_call_the_wps_from_a_kernel(hub):
    url = hub["url"]
    for user in PASSWORDS:
        r = api(url, admin_token(hub), "POST", f"/users/{user}/server", json={"profile": "cpu"})
        assert r.status_code in (201, 202), r.text
    for user in PASSWORDS:
        wait_server(hub, user)
    token = user_token(hub, "alice")
    out = run_in_kernel(hub, "alice", token, "\n".join([
        "import os",
        "from pathlib import Path",
        "from geoml_hub.client import Client",
        "print('device', os.environ.get('GEOML_DEVICE'), 'cuda', repr(os.environ.get('CUDA_VISIBLE_DEVICES')))",
        "print('data', sorted(p.name for p in (Path.home() / 'data').iterdir())[:3])",
        "hub = Client(progress=False)",
        f"r = hub.validate_classification(classification={LABELS!r}, reference={LABELS!r})",
        "print('job', r.job_id, 'oa', r.overall_accuracy, 'n', r.n)",
    ]))
    assert "device cpu cuda ''" in out
    assert "eurosat_ms" in out and "landsat7_chiapas" in out
    line = [ln for ln in out.splitlines() if ln.startswith("job ")][0].split()
    hub["alice_job"] = line[1]
    assert line[3] == "1.0" and line[5] == "718"
    jobs = requests.get(url + "/services/wps/jobs", headers={"Authorization": f"token {token}"}, timeout=30).json()
    assert [j["owner"] for j in jobs["jobs"]] == ["alice"]
    hub["alice_jobs"] = 1


def test_a_new_users_home_has_the_example_notebooks_and_keeps_their_edits(hub):
    """Issue 16.3: the example notebooks are in ``~/notebooks`` of a new user's server, owned by
    the user; on the next spawn an edited one stays as it is and a deleted one comes back."""
    url, repo = hub["url"], Path(__file__).resolve().parents[1] / "notebooks"
    shipped = sorted(p.name for p in repo.glob("*.ipynb")) + ["wps_quickstart.py"]
    listing = "\n".join([
        "import os; from pathlib import Path",
        "d = Path.home() / 'notebooks'",
        "print('NB', sorted(p.name for p in d.iterdir()), all(p.stat().st_uid == os.getuid() for p in d.iterdir()))",
    ])
    out = run_in_kernel(hub, "bob", user_token(hub, "bob"), listing)
    assert f"NB {shipped} True" in out, out
    run_in_kernel(hub, "bob", user_token(hub, "bob"), "\n".join([
        "from pathlib import Path",
        "d = Path.home() / 'notebooks'",
        "(d / '03_library_in_kernel.ipynb').write_text('bob was here')",
        "(d / '02_classify_validate_compare.ipynb').unlink()",
    ]))
    assert api(url, admin_token(hub), "DELETE", "/users/bob/server").status_code in (202, 204)
    wait_server(hub, "bob", ready=False)
    r = api(url, admin_token(hub), "POST", "/users/bob/server", json={"profile": "cpu"})
    assert r.status_code in (201, 202), r.text
    wait_server(hub, "bob")
    out = run_in_kernel(hub, "bob", user_token(hub, "bob"),
                        listing + "\nprint('EDIT', (d / '03_library_in_kernel.ipynb').read_text(), d)")
    assert f"NB {shipped} True" in out and "EDIT bob was here" in out, out
    home_nb = Path(out.split("EDIT bob was here", 1)[1].split()[0])
    name = "02_classify_validate_compare.ipynb"
    assert (home_nb / name).read_bytes() == (repo / name).read_bytes()


def test_notebook_1_runs_in_a_user_server_through_the_authenticated_wps(hub):
    """The issue's "done when": a new user's CPU server runs notebook (1) to its QC summary.
    The notebook executes (nbclient) in a kernel of alice's server, so it sees exactly that
    server's environment: GEOML_WPS_URL and alice's JUPYTERHUB_API_TOKEN, set by the hub."""
    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "01_balance_train_evaluate.ipynb"
    out = run_in_kernel(hub, "alice", user_token(hub, "alice"), "\n".join([
        "import os, shutil, nbformat, nbclient",
        "from pathlib import Path",
        # the copy the hub put into alice's home on her first spawn
        f"nb_path = Path.home() / 'notebooks' / {notebook.name!r}",
        "os.environ['GEOML_DEMO_EPOCHS'] = '3'",
        "nb = nbformat.read(nb_path, as_version=4)",
        "nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',",
        "                        resources={'metadata': {'path': str(nb_path.parent)}}).execute()",
        "text = ''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code' for o in c.outputs)",
        "print(text)",
    ]), timeout=600)
    assert "overall accuracy" in out and "PPV (user's)" in out, out[-3000:]
    job = [ln.split()[2] for ln in out.splitlines() if ln.startswith("evaluate_model job ")][0].rstrip(":")
    rec = requests.get(f"{hub['url']}/services/wps/jobs/{job}",
                       headers={"Authorization": f"token {user_token(hub, 'alice')}"}, timeout=30).json()
    assert rec["owner"] == "alice" and rec["status"] == "succeeded"
    summary = json.loads((hub["state"] / "wps" / "outputs" / job / "summary.json").read_text())
    assert f"overall accuracy {summary['overall_accuracy']:5.3f}" in out


def test_other_users_and_anonymous_are_refused(hub):
    url, job = hub["url"], hub["alice_job"]
    bob = {"Authorization": f"token {user_token(hub, 'bob')}"}
    alice = {"Authorization": f"token {user_token(hub, 'alice')}"}
    for path in (f"/jobs/{job}", f"/outputs/{job}/summary.json"):
        assert requests.get(url + "/services/wps" + path, headers=alice, timeout=30).status_code == 200
        assert requests.get(url + "/services/wps" + path, headers=bob, timeout=30).status_code == 404
        assert requests.get(url + "/services/wps" + path, timeout=30).status_code == 401
    assert requests.get(url + "/services/wps/jobs", headers=bob, timeout=30).json()["jobs"] == []
    r = requests.get(url + "/services/wps/wps?service=WPS&request=GetCapabilities", timeout=30)
    assert r.status_code == 401 and b"ExceptionReport" in r.content
    # an admin sees everyone's jobs
    adm = {"Authorization": f"token {admin_token(hub)}"}
    listed = requests.get(url + "/services/wps/jobs", headers=adm, timeout=30).json()["jobs"]
    assert job in [j["job_id"] for j in listed] and {j["owner"] for j in listed} == {"alice"}


def test_publish_shares_results_with_everyone(hub):
    url, job = hub["url"], hub["alice_job"]
    bob = {"Authorization": f"token {user_token(hub, 'bob')}"}
    alice = {"Authorization": f"token {user_token(hub, 'alice')}"}
    assert requests.post(f"{url}/services/wps/jobs/{job}/publish", headers=bob, timeout=30).status_code == 404
    r = requests.post(f"{url}/services/wps/jobs/{job}/publish", headers=alice, timeout=30)
    assert r.status_code == 200 and r.json()["published"] and r.json()["shared_as"] == f"results/alice/{job}"
    assert requests.get(f"{url}/services/wps/outputs/{job}/summary.json", headers=bob, timeout=30).status_code == 200
    # ... and enters the STAC catalogue's results collection (issue 16.2), behind the hub's prefix
    results = f"{url}/services/wps/stac/results/collection.json"
    assert requests.get(results, timeout=30).status_code == 401
    links = requests.get(results, headers=bob, timeout=30).json()["links"]
    item_url = urllib.parse.urljoin(results, next(x["href"] for x in links if x["rel"] == "item"))
    item = requests.get(item_url, headers=bob, timeout=30).json()
    assert item["id"] == job and item["properties"]["geoml:owner"] == "alice"
    summary = urllib.parse.urljoin(item_url, item["assets"]["summary"]["href"])
    assert summary == f"{url}/services/wps/outputs/{job}/summary.json"
    # bob's server idles since the spawn test: on a loaded machine the culler (CULL_TIMEOUT) may
    # have stopped it meanwhile, as it should; then bob starts it again
    if not api(url, admin_token(hub), "GET", "/users/bob").json()["servers"].get(""):
        r = api(url, admin_token(hub), "POST", "/users/bob/server", json={"profile": "cpu"})
        assert r.status_code in (201, 202), r.text
    wait_server(hub, "bob")
    out = run_in_kernel(hub, "bob", user_token(hub, "bob"), "\n".join([
        "import json; from pathlib import Path",
        f"p = Path.home() / 'results' / 'alice' / {job!r}",
        "print('shared', json.loads((p / 'summary.json').read_text())['overall_accuracy'], (p / 'job.json').exists())",
    ]))
    assert "shared 1.0 True" in out


def _server_pids(account: str) -> list:
    uid = pwd.getpwnam(account).pw_uid
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and os.stat(f"/proc/{p}").st_uid == uid]


@pytest.mark.skipif(not ROOT, reason="as a normal user geoml-hub up is single-account (docs/security.md)")
def test_each_user_runs_as_their_own_account_and_reads_nothing_of_the_others(hub):
    """Issue 12.2: as root, alice's and bob's servers and kernels run as their own accounts
    (``jupyter-alice`` and ``jupyter-bob``; here with the test session's prefix); from bob's kernel every secret and database of the platform, alice's home
    and alice's processes' environments are unreadable, and the shared data is read-only."""
    url, state = hub["url"], hub["state"]
    for user in ("alice", "bob"):
        if not api(url, admin_token(hub), "GET", f"/users/{user}").json()["servers"].get(""):
            r = api(url, admin_token(hub), "POST", f"/users/{user}/server", json={"profile": "cpu"})
            assert r.status_code in (201, 202), r.text
        wait_server(hub, user)
    out = run_in_kernel(hub, "alice", user_token(hub, "alice"), "\n".join([
        "import os, pwd, stat; from pathlib import Path",
        "(Path.home() / 'secret.txt').write_text('alice only')",
        "print('me', pwd.getpwuid(os.getuid()).pw_name, oct(stat.S_IMODE(Path.home().stat().st_mode)), Path.home())",
    ]))
    me = out.split()
    assert me[:3] == ["me", f"{ACCOUNT_PREFIX}alice", "0o700"], out
    alice_home = Path(me[3])
    assert alice_home.is_relative_to(hub["base"]) and alice_home.stat().st_uid == pwd.getpwnam(
        f"{ACCOUNT_PREFIX}alice").pw_uid
    alice_pids = _server_pids(f"{ACCOUNT_PREFIX}alice")
    assert alice_pids, "no process of alice's account"
    # the environment of alice's server holds her API token: the test (root) sees it there
    assert any(b"JUPYTERHUB_API_TOKEN=" in Path(f"/proc/{p}/environ").read_bytes() for p in alice_pids)
    secrets = {name: state / name for name in ("admin_password", "jupyterhub_cookie_secret", "proxy_token",
                                               "jupyterhub.sqlite", "hub.log", "up.json")}
    secrets.update({f"wps/{p.name}": p for p in (state / "wps").iterdir() if p.is_file()})
    assert any(n.endswith((".sqlite", ".db")) for n in secrets), sorted(secrets)  # the job database
    secrets["alice's file"] = alice_home / "secret.txt"
    secrets.update({f"/proc/{p}/environ": Path(f"/proc/{p}/environ") for p in alice_pids})
    for name, path in secrets.items():
        assert path.exists(), name  # each target is real: only bob's account is refused
    probe = "\n".join([
        "import json, os, pwd; from pathlib import Path",
        f"targets = {json.dumps({k: str(v) for k, v in secrets.items()})}",
        "res = {}",
        "for name, path in targets.items():",
        "    try:",
        "        open(path, 'rb').read(1); res[name] = 'READ'",
        "    except PermissionError:",
        "        res[name] = 'denied'",
        f"for name, path in (('state dir', {str(state)!r}), ('alice home', {str(alice_home)!r})):",
        "    try:",
        "        os.listdir(path); res[name] = 'LISTED'",
        "    except PermissionError:",
        "        res[name] = 'denied'",
        "try:",
        "    (Path.home() / 'data' / 'bob-was-here').write_text('x'); res['data write'] = 'WROTE'",
        "except OSError as e:",
        "    res['data write'] = 'denied' if e.errno in (1, 13, 30) else repr(e)",
        "res['user'] = pwd.getpwuid(os.getuid()).pw_name",
        "res['token in env'] = 'JUPYTERHUB_API_TOKEN' in os.environ",
        "print('RESULT', json.dumps(res))",
    ])
    out = run_in_kernel(hub, "bob", user_token(hub, "bob"), probe)
    res = json.loads(out.split("RESULT", 1)[1])
    assert res.pop("user") == f"{ACCOUNT_PREFIX}bob" and res.pop("token in env") is True
    assert res == {k: "denied" for k in res}, res
    assert len(res) >= len(secrets) + 3


def test_idle_culler_spares_busy_kernels(hub):
    """bob's server is idle and is culled; alice's kernel is busy (quiet computation) and is not."""
    url = hub["url"]
    kid, ws, _ = asyncio.run(_execute(url, "alice", user_token(hub, "alice"),
                                      f"import time; time.sleep({3 * CULL_TIMEOUT})", wait=False, timeout=0))
    wait_server(hub, "bob", ready=False, timeout=4 * CULL_TIMEOUT)
    model = api(url, admin_token(hub), "GET", "/users/alice").json()
    assert model["servers"][""]["ready"], "the server with a busy kernel was culled"


def test_restart_keeps_users_and_jobs(hub):
    state, url = hub["state"], hub["url"]
    tree = hub_tree(state)
    assert down(state).returncode == 0
    assert not [(p, t) for p, t in tree if alive(p, t)], "processes left after down"
    res = up(state, hub["port"], hub["base"])
    assert res.returncode == 0, res.stderr
    assert "(created now)" not in res.stdout  # the admin exists already
    assert login(url, "alice", PASSWORDS["alice"]).login_status == 302
    jobs = requests.get(url + "/services/wps/jobs", headers={"Authorization": f"token {user_token(hub, 'alice')}"},
                        timeout=30).json()["jobs"]
    assert hub["alice_job"] in [j["job_id"] for j in jobs] and {j["status"] for j in jobs} == {"succeeded"}


def test_browser_reaches_the_wps_through_the_hub_login(hub):
    """A browser has no token: the WPS sends it through the hub's OAuth login and keeps the
    result in a cookie (how the map will call the WPS)."""
    s = login(hub["url"], "alice", PASSWORDS["alice"])
    assert s.login_status == 302
    r = s.get(hub["url"] + "/services/wps/jobs", headers={"Accept": "text/html"}, timeout=60)
    assert r.status_code == 200, r.text[:500]
    assert any(h.status_code in (302, 303) and "oauth2/authorize" in h.headers.get("location", "")
               for h in r.history), [h.headers.get("location") for h in r.history]
    assert {j["owner"] for j in r.json()["jobs"]} == {"alice"}
    assert "geoml-wps-token" in s.cookies
    # the cookie alone is enough from now on, and it is not valid for anyone else's jobs
    r = s.get(f"{hub['url']}/services/wps/outputs/{hub['alice_job']}/summary.json", timeout=30)
    assert r.status_code == 200 and r.json()["overall_accuracy"] == 1.0
    forged = requests.get(f"{hub['url']}/services/wps/jobs", cookies={"geoml-wps-token": "x.y"}, timeout=30)
    assert forged.status_code == 401


def test_ctrl_c_stops_everything(tmp_path, shared_base):
    """``geoml-hub up`` in the foreground; Ctrl-C (SIGINT) stops every process it started."""
    import signal

    state, port = tmp_path / "state", free_port()
    proc = subprocess.Popen([str(CONSOLE_SCRIPT), "up", "--state-dir", str(state), "--port", str(port),
                             "--cull-timeout", "0", *shared_dirs(shared_base / "ctrl-c")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "stop with Ctrl-C" in line:
            break
    assert any("is running at" in ln for ln in lines), "".join(lines) + (state / "hub.log").read_text()[-3000:]
    tree = hub_tree(state)
    assert len(tree) >= 4  # hub, proxy, WPS server and its dispatcher at least
    # no idle culler with --cull-timeout 0
    log = (state / "hub.log").read_text()
    assert "Starting managed service wps" in log and "service idle-culler" not in log
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0 and "stopped" in rest
    # everything is stopped at once (about 5 s on a quiet machine, at most 8 s plus the load):
    # only a loose bound here, for machines shared with other work
    assert time.monotonic() - started < 60
    assert not [(p, t) for p, t in tree if alive(p, t)]
    assert not (state / "up.pid").exists()
