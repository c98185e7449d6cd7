"""A stand-in for a Kubernetes API server and kubelet that runs ``batch/v1`` Jobs as local processes.

There is no cluster in CI, so the WPS's Job backend is tested end to end against this: the real
``kubernetes`` client of the WPS (loaded from a kubeconfig, as on a laptop) talks HTTP to it; a
created Job's single container command runs here as a subprocess with the container's
environment (``value`` entries and ``secretKeyRef`` entries resolved from :attr:`secrets`), its
output is the pod's log, and the Job and pod status follow the process the way the Job
controller reports them (``Complete``, ``Failed`` with ``BackoffLimitExceeded`` or
``DeadlineExceeded``). An image in :attr:`unpullable` never starts: its pod waits with
``ErrImagePull``. Deleting a Job kills its process group.

Not simulated: scheduling (the node selector, tolerations and resources are only recorded),
volumes (the pod sees this machine's file system, so mount paths must equal the server's),
retries (``backoffLimit`` is honoured only as 0), the TTL controller, and Indexed Jobs: ``/version``
answers ``version`` (default 1.20, the real test cluster's), so a fan-out runs as one Job per
block, each with its ``JOB_COMPLETION_INDEX`` in its environment.

The manifests themselves are validated strictly elsewhere (tests/test_wps_k8s.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional
from urllib.parse import parse_qs, urlparse


class ApiHandler(BaseHTTPRequestHandler):
    """JSON answers and ``Status`` errors as the Kubernetes API server gives them."""

    def log_message(self, *a):
        pass

    def _send(self, code, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code, reason):
        self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                          "message": reason, "code": code})

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n)) if n else None


def serve(handler):
    """A threaded HTTP server on a free loopback port, serving in a daemon thread; ``(server, url)``."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Run:
    """One Job: its manifest, its pod and (once started) its process."""

    def __init__(self, manifest: dict, log: Path):
        self.manifest = manifest
        self.log = log
        self.created = _now()
        self.started = time.monotonic()
        self.proc: Optional[subprocess.Popen] = None
        self.exit_code: Optional[int] = None
        self.conditions: List[dict] = []
        self.waiting: Optional[dict] = None
        tmpl = manifest["spec"]["template"]
        self.container = tmpl["spec"]["containers"][0]
        self.pod_name = f"{manifest['metadata']['name']}-{os.urandom(3).hex()}"[:63]
        self.pod_labels = dict(tmpl["metadata"].get("labels") or {})
        self.killed_by_deadline = False

    def job_json(self) -> dict:
        status: Dict[str, object] = {"startTime": self.created}
        if self.exit_code is None and not self.conditions:
            status["active"] = 1
        elif self.exit_code == 0:
            status["succeeded"] = 1
        else:
            status["failed"] = 1
        if self.conditions:
            status["conditions"] = self.conditions
        return dict(self.manifest, status=status)

    def pod_json(self) -> dict:
        cs = {"name": self.container["name"], "image": self.container["image"], "imageID": "",
              "restartCount": 0, "ready": False}
        if self.waiting is not None:
            phase, cs["state"] = "Pending", {"waiting": self.waiting}
        elif self.exit_code is None:
            phase, cs["state"], cs["ready"] = "Running", {"running": {"startedAt": self.created}}, True
        else:
            phase = "Succeeded" if self.exit_code == 0 else "Failed"
            cs["state"] = {"terminated": {"exitCode": self.exit_code, "reason": "Completed" if self.exit_code == 0
                                          else "Error", "startedAt": self.created, "finishedAt": _now()}}
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": self.pod_name, "namespace": self.manifest["metadata"]["namespace"],
                             "creationTimestamp": self.created, "labels": self.pod_labels},
                "spec": {"containers": [{"name": self.container["name"], "image": self.container["image"]}]},
                "status": {"phase": phase, "containerStatuses": [cs]}}


class KubeStandIn:
    """The API-server/kubelet stand-in (see the module docstring).

    Parameters
    ----------
    workdir : path
        Where pod logs and the kubeconfig go.
    secrets : dict, optional
        ``{secret name: {key: value}}`` for ``valueFrom.secretKeyRef`` entries.
    unpullable : iterable of str
        Images whose pull fails.
    """

    def __init__(self, workdir, secrets: Optional[Dict[str, Dict[str, str]]] = None, unpullable=(),
                 version=("1", "20")):
        self.version = version
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.secrets = secrets or {}
        self.unpullable = set(unpullable)
        self.runs: Dict[str, _Run] = {}
        self.created: List[dict] = []
        self.deleted: List[str] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(ApiHandler):
            def do_POST(self):
                m = re.fullmatch(r"/apis/batch/v1/namespaces/([^/]+)/jobs", urlparse(self.path).path)
                if not m:
                    return self._status(404, "NotFound")
                body = self._body()
                code = outer._create(body)
                self._send(code, body) if code == 201 else self._status(code, "AlreadyExists")

            def do_GET(self):
                url = urlparse(self.path)
                outer._tick()
                if url.path == "/version":
                    if outer.version is None:
                        return self._status(404, "NotFound")
                    major, minor = outer.version
                    return self._send(200, {"major": major, "minor": minor, "gitVersion": f"v{major}.{minor}.0",
                                            "platform": "linux/amd64"})
                m = re.fullmatch(r"/apis/batch/v1/namespaces/([^/]+)/jobs/([^/]+)", url.path)
                if m:
                    run = outer.runs.get(m.group(2))
                    return self._send(200, run.job_json()) if run else self._status(404, "NotFound")
                if re.fullmatch(r"/apis/batch/v1/namespaces/([^/]+)/jobs", url.path):
                    # label selectors of existence (``key``) and equality (``key=value``) terms
                    selector = parse_qs(url.query).get("labelSelector", [""])[0]
                    terms = [t.split("=", 1) for t in selector.split(",") if t]
                    items = [r.job_json() for r in outer.runs.values()
                             if all(t[0] in r.manifest["metadata"]["labels"] and
                                    (len(t) == 1 or r.manifest["metadata"]["labels"][t[0]] == t[1]) for t in terms)]
                    return self._send(200, {"kind": "JobList", "apiVersion": "batch/v1", "metadata": {}, "items": items})
                if re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", url.path):
                    selector = parse_qs(url.query).get("labelSelector", [""])[0]
                    want = dict(kv.split("=", 1) for kv in selector.split(",") if kv)
                    items = [r.pod_json() for r in outer.runs.values()
                             if all(r.pod_labels.get(k) == v for k, v in want.items())]
                    return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
                m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log", url.path)
                if m:
                    for r in outer.runs.values():
                        if r.pod_name == m.group(2) and r.proc is not None:
                            return self._send(200, r.log.read_bytes(), "text/plain")
                    return self._status(400, "BadRequest")
                self._status(404, "NotFound")

            def do_DELETE(self):
                m = re.fullmatch(r"/apis/batch/v1/namespaces/([^/]+)/jobs/([^/]+)", urlparse(self.path).path)
                self._body()
                if not m or not outer._delete(m.group(2)):
                    return self._status(404, "NotFound")
                self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

        self.httpd, self.url = serve(Handler)

    # -- the kubelet part -----------------------------------------------------------------------
    def _env(self, container: dict) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "OMP_NUM_THREADS")}
        for item in container.get("env") or []:
            if "value" in item:
                value = item["value"]
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                value = self.secrets[ref["name"]][ref["key"]]
            # $(VAR) references to earlier entries, as the kubelet expands them
            env[item["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)),
                                       value)
        return env

    def _create(self, manifest: dict) -> int:
        name = manifest["metadata"]["name"]
        with self.lock:
            if name in self.runs:
                return 409
            run = _Run(manifest, self.workdir / f"{name}.log")
            self.runs[name] = run
            self.created.append(manifest)
            if run.container["image"] in self.unpullable:
                run.waiting = {"reason": "ErrImagePull",
                               "message": f"failed to pull image \"{run.container['image']}\": not found"}
                return 201
            cmd = list(run.container["command"]) + list(run.container.get("args") or [])
            if cmd[0] == "python":  # the image's python is this machine's interpreter
                cmd[0] = sys.executable
            log = open(run.log, "wb")
            run.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=self._env(run.container), start_new_session=True)
            log.close()
        return 201

    def _tick(self) -> None:
        """Update Job conditions from the processes (the Job controller's part)."""
        with self.lock:
            for run in self.runs.values():
                if run.conditions:
                    continue
                deadline = run.manifest["spec"].get("activeDeadlineSeconds")
                if deadline and time.monotonic() - run.started > deadline:
                    if run.proc is not None and run.proc.poll() is None:
                        _kill(run.proc)
                        run.exit_code = run.proc.wait()
                    run.conditions = [_condition("Failed", "DeadlineExceeded", "Job was active longer than "
                                                 "specified deadline")]
                    continue
                if run.proc is None or run.proc.poll() is None:
                    continue
                run.exit_code = run.proc.returncode
                if run.exit_code == 0:
                    run.conditions = [_condition("Complete", None, None)]
                else:
                    run.conditions = [_condition("Failed", "BackoffLimitExceeded",
                                                 "Job has reached the specified backoff limit")]

    def _delete(self, name: str) -> bool:
        with self.lock:
            run = self.runs.pop(name, None)
            if run is None:
                return False
            self.deleted.append(name)
            if run.proc is not None and run.proc.poll() is None:
                _kill(run.proc)
                run.proc.wait()
            return True

    # -- test helpers ---------------------------------------------------------------------------
    def kubeconfig(self, namespace: str = "geoml") -> Path:
        """Write a kubeconfig that points the client at this stand-in; return its path."""
        path = self.workdir / "kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {"token": "standin-token"}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin",
                                                         "namespace": namespace}}],
        }))
        return path

    def run_of(self, job_id: str) -> Optional[_Run]:
        for run in self.runs.values():
            if run.pod_labels.get("geoml-hub/job-id") == job_id:
                return run
        return None

    def close(self) -> None:
        for name in list(self.runs):
            self._delete(name)
        self.httpd.shutdown()
        self.httpd.server_close()


def _condition(kind: str, reason: Optional[str], message: Optional[str]) -> dict:
    c = {"type": kind, "status": "True", "lastProbeTime": _now(), "lastTransitionTime": _now()}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
