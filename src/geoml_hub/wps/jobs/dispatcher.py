"""The dispatcher: starts queued jobs, watches their workers, cancels, and applies retention.

One dispatcher runs per server (a thread in the werkzeug process, or in the gunicorn
master). It closes PyWPS 4.8's gaps:

- queued jobs start as soon as a slot is free (``parallelprocesses``) — also right after
  a restart, without waiting for another job to end;
- at startup, a job still marked running whose worker is gone (kill -9, reboot) is
  marked failed with the reason; a worker that survived a server crash is adopted and
  watched until it ends;
- a worker that exits without writing a final status is marked failed with its exit
  code or signal, and its status document says so;
- a job whose worker was killed (a signal, or a worker gone while the server was down) is
  put back in the queue and run again, ``job_retries`` times (default once) when its process
  is safe to rerun (``GeomlProcess.rerunnable``); ``attempts`` in the job record and the
  status messages count the attempts, and the final failure names the last one;
- on a graceful stop (SIGTERM, Ctrl-C) running jobs are stopped and put back in the
  queue, so they run again on the next start;
- outputs of jobs finished more than ``retention_hours`` ago are removed, and the job
  record says when.

With ``backend = kubernetes`` the processes in ``kubernetes_processes`` run as Kubernetes
Jobs (:mod:`geoml_hub.wps.jobs.kubernetes`) instead of local workers: the same worker runs in the Job's
pod and writes progress and the final state to the shared job database and the status
document to the shared outputs volume, so clients see them as for a local job. The
dispatcher watches the Job: a pending pod's reason (unschedulable, pulling) becomes the job's
message; a failed pod, an image pull failure, the deadline or a deleted Job fail the WPS job
with the reason, and the pod's log is kept in ``logs/<job id>.log``. At most
``kubernetes_max_jobs`` such jobs run at once; they do not take local slots, and they go on
running while the server restarts.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, Optional, Tuple

from pywps.response.status import WPS_STATUS

from ...processes import load as load_processes
from ...web.proctree import stop_group
from ...web.auth import STANDALONE_OWNER
from ..ogc import inputs as ds
from ..ogc.operations import raster_pixels
from ..ogc.process import AtomicExecuteResponse, restore_request
from ..ogc.service import build_service_light, process_copy
from ..settings import load_settings_json
from . import kubernetes as k8s
from .catalog import refresh_in_background, refresh_logged
from .kubernetes import backend_for
from .store import (_WAKE, CLUSTER_HOST, DISMISSED, FAILED, HOST, QUEUED, RUNNING, Job, JobStore, store_for, utcnow,
                    wake, worker_alive)

LOGGER = logging.getLogger("geoml_hub.wps")



def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except (ValueError, TypeError):
        return f"signal {-code}"


def write_final_status(settings, service, job: Job, message: str, status=WPS_STATUS.FAILED) -> None:
    """Write a failed status document for ``job`` (atomically), e.g. after its worker died or it
    was cancelled (``status=WPS_STATUS.ACCEPTED``: the accepted document of a job put back in the
    queue). The job table is not changed here."""
    if not job.request:
        return
    try:
        request = restore_request(job)
        process = process_copy(service, request.identifier)
        process._set_uuid(job.uuid)
        process._setup_status_storage()
        response = AtomicExecuteResponse(request, process=process, uuid=job.uuid)
        response.store_status_file = True
        response._update_status(status, message, 100 if status == WPS_STATUS.FAILED else 0, clean=False)
    except Exception:  # never let a status document stop the dispatcher
        LOGGER.exception("could not write the status document of job %s", job.uuid)


def remove_partial_outputs(settings, uuid: str) -> None:
    """Remove a job's output directory and working directory (its status document stays)."""
    ds.remove_tree(settings.job_outputs(uuid))
    ds.remove_tree(settings.job_workdir(uuid))


def stop_worker(pid: Optional[int], pid_start: Optional[int], grace: float = 3.0) -> bool:
    """Stop a worker and its process group: SIGTERM, then SIGKILL after ``grace`` seconds
    (:func:`geoml_hub.web.proctree.stop_group`). Returns ``True`` once no such process is left."""
    return stop_group(pid, pid_start, grace)


def cancel_job(settings, service, store: JobStore, uuid: str, by: str) -> Tuple[bool, str]:
    """Cancel (dismiss) a queued or running job.

    The job becomes ``dismissed``; its WPS status document says failed with the reason; a
    running worker is stopped with its whole process group; partial outputs are removed.

    Returns
    -------
    (bool, str)
        Whether the job was cancelled, and a message (why not, when it was not).
    """
    job = store.get(uuid)
    if job is None:
        return False, "no such job"
    if job.final:
        return False, f"job already {job.state}"
    if job.mode == "sync":
        return False, "a synchronous request cannot be cancelled"
    message = f"dismissed: cancelled by {by}"
    if job.state == RUNNING and job.host not in (None, HOST, CLUSTER_HOST):
        return False, f"job runs on host {job.host}; cancel it there"
    if not store.finish(uuid, DISMISSED, message, expected=(job.state,)):
        job = store.get(uuid)
        return False, f"job already {job.state}" if job else "no such job"
    fresh = store.get(uuid)
    if job.state == RUNNING and fresh.host == CLUSTER_HOST:
        try:
            backend_for(settings).cancel(uuid)  # deletes the Job and (foreground) its pod
        except Exception as exc:  # the job is dismissed either way; the Job ends at its deadline
            LOGGER.error("job %s: could not delete its Kubernetes Job: %s", uuid, exc)
    elif job.state == RUNNING:
        stop_worker(fresh.pid, fresh.pid_start)
        if settings.backend == "kubernetes" and settings.fan_out_min_pixels:
            try:  # the blocks of a fan-out whose worker (here) was stopped
                backend_for(settings).delete_fan_out(uuid, "Foreground")
            except Exception as exc:  # the dispatcher removes them at its next look
                LOGGER.error("job %s: could not delete its fan-out Jobs: %s", uuid, exc)
    write_final_status(settings, service, store.get(uuid), message)
    remove_partial_outputs(settings, uuid)
    LOGGER.info("job %s (%s) %s", uuid, job.identifier, message)
    return True, message


def dismiss_job(settings, service, store: JobStore, uuid: str, by: str) -> Tuple[bool, str]:
    """Dismiss a job, whatever its state (OGC API - Processes' ``DELETE /jobs/{id}``).

    A queued or running job is cancelled (:func:`cancel_job`); a job that has ended loses its
    outputs, its working directory and its shared copy (``results/<owner>/<job id>``, when it was
    published), and becomes ``dismissed`` (:meth:`JobStore.dismiss_ended`); its status document
    then says failed with the reason.

    Returns
    -------
    (bool, str)
        Whether the job was dismissed, and a message (why not, when it was not).
    """
    job = store.get(uuid)
    if job is None:
        return False, "no such job"
    if not job.final:
        return cancel_job(settings, service, store, uuid, by)
    if job.state == DISMISSED:
        return False, "job already dismissed"
    message = f"dismissed: its outputs were removed by {by}"
    if not store.dismiss_ended(uuid, message):
        job = store.get(uuid)
        return False, f"job already {job.state}" if job else "no such job"
    remove_partial_outputs(settings, uuid)
    ds.remove_tree(settings.results_dir / job.owner / uuid)
    write_final_status(settings, service, store.get(uuid), message)
    LOGGER.info("job %s (%s) %s", uuid, job.identifier, message)
    if job.published:  # it leaves the STAC catalogue's results collection
        refresh_logged(settings, store, f"published job {uuid} dismissed")
    return True, message


class Dispatcher(threading.Thread):
    """Background thread that drives the job table (see the module docstring).

    Parameters
    ----------
    settings : Settings
        The server settings (prepared).
    service : pywps.Service
        The service (used to write status documents of jobs that died).
    poll : float
        Seconds between looks at the queue (a submission in this process wakes it at once).
    """

    def __init__(self, settings, service, poll: float = 0.1):
        super().__init__(name="geoml-wps-dispatcher", daemon=True)
        self.settings = settings
        self.service = service
        self.poll = poll
        self.store = store_for(settings.database)
        self.children: Dict[str, subprocess.Popen] = {}
        self._stop_event = threading.Event()
        self._stopped = threading.Event()
        self._last_sweep = 0.0
        self._last_check = 0.0
        self._cluster = None
        # look for expired outputs every minute (more often for retention periods under 4 minutes)
        self.sweep_interval = min(60.0, max(1.0, settings.retention_hours * 3600.0 / 4.0))

    # -- lifecycle ------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self.recover()
        except Exception:
            LOGGER.exception("job recovery failed")
        refresh_in_background(self.settings, self.store, "start-up")  # the STAC catalogue of the data and results
        while not self._stop_event.is_set():
            try:
                self.step()
            except Exception:
                LOGGER.exception("dispatcher step failed")
            _WAKE.wait(self.poll)
            _WAKE.clear()
        self._stopped.set()

    def step(self) -> None:
        self.reap()
        self.start_queued()
        now = time.monotonic()
        if now - self._last_check > 2.0:
            self._last_check = now
            self.check_running()
            if self.settings.backend == "kubernetes":
                self.check_cluster()
        if self.settings.retention_hours > 0 and now - self._last_sweep > self.sweep_interval:
            self._last_sweep = now
            self.sweep()

    def stop(self, requeue: bool = True, timeout: float = 10.0) -> None:
        """Stop the thread; stop running workers and put their jobs back in the queue."""
        self._stop_event.set()
        wake()
        self._stopped.wait(timeout)
        if not requeue:
            return
        for uuid, proc in list(self.children.items()):
            job = self.store.get(uuid)
            if job is None or job.state != RUNNING:
                continue
            stop_worker(proc.pid, job.pid_start)
            proc.poll()
            if self.store.requeue(uuid, "re-queued: the server stopped while it ran"):
                remove_partial_outputs(self.settings, uuid)
                LOGGER.info("job %s re-queued (server stopping)", uuid)
        self.children.clear()

    # -- the work -------------------------------------------------------------------------------
    def recover(self) -> None:
        """Startup: fail running jobs whose worker is gone; adopt the ones that survived."""
        for job in self.store.list(states=[RUNNING]):
            if job.host not in (None, HOST):
                continue
            if worker_alive(job.pid, job.pid_start) and job.pid != os.getpid():
                LOGGER.info("job %s: worker %s survived a server restart; watching it", job.uuid, job.pid)
                continue
            if job.mode == "sync":
                reason = "failed: the server stopped while it handled this synchronous request"
            elif job.pid is None:
                reason = "failed: the server stopped before the job's worker started"
            else:
                self._retry_or_fail(job, "the worker died while the server was down, e.g. killed or a restart",
                                    "rerun the job")
                continue
            self._fail(job, reason)

    def _rerunnable(self, identifier: str) -> bool:
        process = getattr(self.service, "processes", {}).get(identifier)
        return bool(getattr(process, "rerunnable", False))

    def _retry_or_fail(self, job: Job, why: str, advice: str = "") -> None:
        """A job whose worker was killed: back in the queue while it has attempts left (see
        ``Settings.job_retries``) and its process is safe to rerun, else failed with ``why``."""
        total = self.settings.job_retries + 1
        attempts = job.attempts or 1
        if job.mode == "async" and attempts < total and self._rerunnable(job.identifier):
            message = f"re-queued: {why}; attempt {attempts + 1} of {total} starts when a worker is free"
            if self.store.retry(job.uuid, message):
                LOGGER.warning("job %s (%s) %s", job.uuid, job.identifier, message)
                remove_partial_outputs(self.settings, job.uuid)
                write_final_status(self.settings, self.service, self.store.get(job.uuid), message,
                                   status=WPS_STATUS.ACCEPTED)
                wake()
                return
        tail = f"; attempt {attempts} of {total}" if total > 1 and self._rerunnable(job.identifier) else ""
        self._fail(job, f"failed: {why}" + (f"; {advice}" if advice else "") + tail)

    def _fail(self, job: Job, reason: str) -> None:
        if self.store.finish(job.uuid, FAILED, reason, expected=(RUNNING,)):
            LOGGER.warning("job %s (%s) %s", job.uuid, job.identifier, reason)
            write_final_status(self.settings, self.service, self.store.get(job.uuid), reason)
            remove_partial_outputs(self.settings, job.uuid)

    def reap(self) -> None:
        for uuid, proc in list(self.children.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.children[uuid]
            job = self.store.get(uuid)
            if job is not None and job.state == RUNNING:
                if code < 0:  # killed (the OOM killer, an admin): another attempt may succeed
                    self._retry_or_fail(job, f"the worker process was killed by {_signal_name(code)}",
                                        f"see the server log {job.uuid}.log")
                    continue
                if code > 0:
                    why = f"exited with status {code}"
                else:
                    why = "ended without a final status"
                self._fail(job, f"failed: the worker process {why}; see the server log {job.uuid}.log")

    def check_running(self) -> None:
        """Fail running jobs of this host whose worker is gone and that no thread of ours watches
        (adopted workers, or workers whose exit status another process reaped)."""
        for job in self.store.list(states=[RUNNING]):
            if job.uuid in self.children or job.host not in (None, HOST) or job.pid is None or job.mode == "sync":
                continue
            if not worker_alive(job.pid, job.pid_start):
                job2 = self.store.get(job.uuid)
                if job2 is not None and job2.state == RUNNING:
                    self._retry_or_fail(job2, "the worker process ended without a final status")

    def start_queued(self) -> None:
        counts = self.store.counts()
        if not counts[QUEUED]:
            return
        running = self.store.list(states=[RUNNING])
        in_cluster = sum(1 for j in running if j.host == CLUSTER_HOST)
        free = {"local": self.settings.parallelprocesses - (len(running) - in_cluster),
                "kubernetes": self.settings.kubernetes_max_jobs - in_cluster}
        if self.settings.backend != "kubernetes":
            free["kubernetes"] = 0
        if free["local"] <= 0 and free["kubernetes"] <= 0:
            return
        for job in self.store.list(states=[QUEUED], oldest_first=True, limit=200):
            where = "kubernetes" if self.settings.runs_on_kubernetes(job.identifier) else "local"
            if where == "kubernetes" and self.fans_out(job):
                where = "local"  # its worker runs here and runs the blocks as Kubernetes Jobs
            if free[where] <= 0:
                continue
            if self.store.claim(job.uuid):
                free[where] -= 1
                if where == "kubernetes":
                    self.submit_to_cluster(job)
                else:
                    self.spawn(job)
            if free["local"] <= 0 and free["kubernetes"] <= 0:
                break

    def fans_out(self, job: Job) -> bool:
        """Whether ``job`` fans out over Kubernetes Jobs: its process names a fan-out raster input
        (``GeomlProcess.fan_out``) and the raster has at least ``fan_out_min_pixels`` pixels
        (read from its header; a raster that cannot be resolved or read does not fan out, and the
        job reports the problem itself)."""
        process = getattr(self.service, "processes", {}).get(job.identifier)
        name = getattr(process, "fan_out", None)
        if not name or self.settings.backend != "kubernetes" or not self.settings.fan_out_min_pixels:
            return False
        try:
            inputs = restore_request(job).inputs.get(name) or []
            admin = job.owner == STANDALONE_OWNER and self.settings.auth == "none"
            path = ds.resolve(inputs[0].data, self.settings, ds.Access(job.owner, admin), kind="file",
                              job_store=self.store)
            return self.settings.fans_out(raster_pixels(path))
        except Exception as exc:  # the job runs as usual and says what is wrong with its input
            LOGGER.info("job %s: no fan-out (%s)", job.uuid, exc)
            return False

    # -- Kubernetes Jobs ------------------------------------------------------------------------
    @property
    def cluster(self):
        """The :class:`~geoml_hub.wps.jobs.kubernetes.KubernetesJobBackend` (created on first use)."""
        if self._cluster is None:
            self._cluster = backend_for(self.settings)
        return self._cluster

    def submit_to_cluster(self, job: Job) -> None:
        """Create the Kubernetes Job of a claimed job; a refusal of the API fails the job."""
        try:
            inputs = restore_request(job).inputs
            device = inputs["device"][0].data if inputs.get("device") else "auto"
            name = self.cluster.submit(job.uuid, job.identifier, device)
        except Exception as exc:
            reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
            self._fail(job, f"failed: could not create the Kubernetes Job: {reason}")
            return
        self.store.set_cluster_job(job.uuid, f"Kubernetes Job {name} created")
        LOGGER.info("job %s (%s) submitted as Kubernetes Job %s (device %s)", job.uuid, job.identifier, name, device)

    def check_cluster(self) -> None:
        """Follow the Kubernetes Jobs of running jobs: pending reasons become the job's message;
        a Job that failed, ended without a final state or was deleted fails the WPS job."""
        for job in self.store.list(states=[RUNNING]):
            if job.host != CLUSTER_HOST:
                continue
            try:
                state, reason = self.cluster.state(job.uuid)
            except Exception as exc:  # API unreachable: try again at the next look
                LOGGER.warning("job %s: cannot read its Kubernetes Job: %s", job.uuid, exc)
                continue
            if state == k8s.RUNNING:
                self.store.note(job.uuid, f"Kubernetes: {reason}")
                continue
            fresh = self.store.get(job.uuid)  # the worker writes the final state before its pod ends
            self.keep_pod_log(job.uuid)
            if fresh is None or fresh.state != RUNNING:
                continue
            if state == k8s.SUCCEEDED:
                reason = "the Kubernetes Job completed without a final status"
            self._fail(fresh, f"failed: {reason}")
        self.remove_finished_cluster_jobs()
        if self.settings.fan_out_min_pixels:
            self.remove_finished_fan_outs()

    def remove_finished_cluster_jobs(self) -> None:
        """Delete the Kubernetes Jobs of WPS jobs that have ended (after keeping the pod log), so
        that finished Jobs and their pods do not pile up in the namespace."""
        try:
            job_ids = self.cluster.job_ids()
        except Exception as exc:  # API unreachable: try again at the next look
            LOGGER.warning("cannot list the Kubernetes Jobs: %s", exc)
            return
        for uuid in job_ids:
            job = self.store.get(uuid)
            if job is not None and job.state in (QUEUED, RUNNING):
                continue
            self.keep_pod_log(uuid)
            try:
                if self.cluster.remove(uuid):
                    LOGGER.info("job %s: its Kubernetes Job was removed (%s)", uuid,
                                job.state if job is not None else "unknown to this WPS")
            except Exception as exc:
                LOGGER.warning("job %s: cannot remove its Kubernetes Job: %s", uuid, exc)

    def remove_finished_fan_outs(self) -> None:
        """Delete the fan-out Jobs of WPS jobs that have ended (their worker deletes them when it can;
        a killed worker or a cancel leaves them to this)."""
        try:
            job_ids = self.cluster.fan_out_job_ids()
        except Exception as exc:  # API unreachable: try again at the next look
            LOGGER.warning("cannot list the fan-out Jobs: %s", exc)
            return
        for uuid in job_ids:
            job = self.store.get(uuid)
            if job is not None and job.state in (QUEUED, RUNNING):
                continue
            try:
                n = self.cluster.delete_fan_out(uuid, "Background")
                LOGGER.info("job %s: %d fan-out Job(s) removed", uuid, n)
            except Exception as exc:
                LOGGER.warning("job %s: cannot remove its fan-out Jobs: %s", uuid, exc)

    def keep_pod_log(self, uuid: str) -> None:
        """Append the worker pod's log to ``logs/<job id>.log`` (once; pods go with the Job's TTL)."""
        path = self.settings.logs_dir / f"{uuid}.log"
        marker = "--- Kubernetes pod log ---\n"
        try:
            if path.exists() and marker in path.read_text(errors="replace"):
                return
            text = self.cluster.logs(uuid)
        except Exception as exc:
            LOGGER.warning("job %s: cannot read its pod log: %s", uuid, exc)
            return
        with open(path, "a", encoding="utf-8") as f:
            f.write(marker + text)

    def spawn(self, job: Job) -> None:
        log = open(self.settings.logs_dir / f"{job.uuid}.log", "ab")
        env = dict(os.environ)
        env.setdefault("MPLBACKEND", "Agg")
        try:
            proc = subprocess.Popen([sys.executable, "-m", "geoml_hub.wps.jobs.worker",
                                     str(self.settings.settings_file), job.uuid], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env, close_fds=True)
        except OSError as exc:
            self._fail(job, f"failed: could not start a worker: {exc}")
            return
        finally:
            log.close()
        self.children[job.uuid] = proc
        self.store.set_worker(job.uuid, proc.pid)
        LOGGER.info("job %s (%s) started in worker %s", job.uuid, job.identifier, proc.pid)

    def sweep(self, now: Optional[dt.datetime] = None) -> int:
        """Remove outputs of jobs finished more than ``retention_hours`` ago; return how many."""
        now = now or utcnow()
        before = now - dt.timedelta(hours=self.settings.retention_hours)
        n = published = 0
        for job in self.store.expired(before):
            remove_partial_outputs(self.settings, job.uuid)
            self.store.mark_outputs_removed(job.uuid)
            LOGGER.info("job %s: outputs removed (finished %s, retention %g h)", job.uuid, job.finished,
                        self.settings.retention_hours)
            n += 1
            published += bool(job.published)
        if published:  # an expired published job leaves the STAC catalogue's results collection
            refresh_logged(self.settings, self.store, f"{published} published job(s) expired")
        return n


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (``PR_SET_PDEATHSIG``): a dispatcher
    must not outlive a crashed server, or a restarted server would have two."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def main(argv=None) -> int:
    """``python -m geoml_hub.wps.jobs.dispatcher SETTINGS_JSON``: the dispatcher as its own process.

    gunicorn forks its HTTP workers from the master; a dispatcher thread in the master could
    hold SQLite's or another library's lock at the moment of a fork and deadlock the new
    worker, so under gunicorn the dispatcher is a separate process started by the master.
    SIGTERM stops it gracefully (running jobs go back to the queue).
    """
    argv = sys.argv[1:] if argv is None else argv
    parent = os.getppid()
    _die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [dispatcher %(process)d] %(message)s")
    settings = load_settings_json(argv[0])
    service = build_service_light(settings, load_processes())
    dispatcher = Dispatcher(settings, service)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    dispatcher.start()
    while not stop.wait(0.5):
        if os.getppid() != parent:  # the server died (and PR_SET_PDEATHSIG was not available)
            LOGGER.warning("server process %s is gone; dispatcher exits, running workers go on", parent)
            dispatcher.stop(requeue=False)
            return 1
    dispatcher.stop(requeue=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
