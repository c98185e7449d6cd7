"""Run one queued WPS job in its own process: ``python -m geoml_hub.wps.jobs.worker SETTINGS JOB_ID``.

Started by the dispatcher in a new session (its own process group, so a cancel stops it
and every process it started). It re-creates the process and request that the server
stored, runs the handler through PyWPS (status document and job table updated on every
progress step) and exits. The job's working directory is ``state/work/<job id>``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys

from pywps.response.status import WPS_STATUS

from ...processes import load as load_processes
from ...web.auth import STANDALONE_OWNER
from ..ogc import inputs as ds
from ..ogc.process import AtomicExecuteResponse, JobContext, JobEnded, restore_request
from ..ogc.service import build_service_light
from ..settings import load_settings_json
from .kubernetes import ClusterBlockRunner, backend_for
from .store import CLUSTER_HOST, FAILED, RUNNING, store_for

LOGGER = logging.getLogger("geoml_hub.wps")


def block_runner(settings, job, process, request):
    """The Kubernetes block runner of a fan-out-capable job that runs in the WPS (not in a Job's pod)
    on a server with ``backend = kubernetes`` and ``fan_out_min_pixels`` set; else ``None``."""
    if (not getattr(process, "fan_out", None) or settings.backend != "kubernetes" or not settings.fan_out_min_pixels
            or job.host == CLUSTER_HOST):
        return None
    device = request.inputs["device"][0].data if request.inputs.get("device") else "auto"
    return ClusterBlockRunner(backend_for(settings), job.uuid, job.identifier, device,
                              blocks=settings.fan_out_block_count, parallelism=settings.fan_out_parallelism,
                              retries=settings.job_retries, min_pixels=settings.fan_out_min_pixels)


def run_job(settings_file: str, uuid: str) -> int:
    """Run job ``uuid``; return 0 when it ran (succeeded or failed cleanly), 1 otherwise."""
    settings = load_settings_json(settings_file)
    settings.activate()
    store = store_for(settings.database)
    job = store.get(uuid)
    if job is None or job.state != RUNNING:
        LOGGER.info("job %s is not running (state %s); nothing to do", uuid, job.state if job else None)
        return 0
    service = build_service_light(settings, load_processes())
    request = restore_request(job)
    process = service.prepare_process_for_execution(request.identifier)
    shutil.rmtree(process.workdir, ignore_errors=True)  # use a directory named after the job instead
    workdir = settings.job_workdir(uuid)
    workdir.mkdir(parents=True, exist_ok=True)
    process.set_workdir(str(workdir))
    process._set_uuid(uuid)
    process._setup_status_storage()
    process.async_ = True
    process.setup_outputs_from_wps_request(request)
    admin = job.owner == STANDALONE_OWNER and settings.auth == "none"
    process.job = JobContext(uuid, ds.Access(job.owner, admin), settings, store, workdir,
                             block_runner=block_runner(settings, job, process, request))
    response = AtomicExecuteResponse(request, process=process, uuid=uuid)
    response.store_status_file = True
    started = "started"
    if job.host == CLUSTER_HOST and (job.percent or 0) > 0:
        # an earlier pod of this Kubernetes Job ran it (the Job controller replaces a deleted
        # pod): the job starts over here, as a new attempt
        store.rerun(uuid, "started again in a new pod: the previous pod of its Kubernetes Job ended")
        job = store.get(uuid)
        started = f"started: attempt {job.attempts} (in a new pod of its Kubernetes Job)"
    elif (job.attempts or 1) > 1:  # the dispatcher re-queued it after its worker was killed
        started = f"started: attempt {job.attempts} of {max(job.attempts, settings.job_retries + 1)}"
    try:
        response._update_status(WPS_STATUS.STARTED, started, 0, clean=False)
        process._run_process(request, response)
    except JobEnded:
        job = store.get(uuid)
        LOGGER.info("job %s is %s: this worker stops", uuid, job.state if job else "gone")
        return 0
    job = store.get(uuid)
    if job is not None and job.state == RUNNING:
        store.finish(uuid, FAILED, response.message or "the process ended without a final status")
        return 1
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m geoml_hub.wps.jobs.worker SETTINGS_JSON JOB_ID", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [job worker %(process)d] %(message)s")
    os.environ.setdefault("MPLBACKEND", "Agg")
    return run_job(argv[0], argv[1])


if __name__ == "__main__":
    sys.exit(main())
