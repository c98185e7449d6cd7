"""The job table: durable records of every WPS Execute, beside PyWPS's logging tables.

PyWPS 4.8 keeps async jobs in its logging database, but only starts a queued job when
another one finishes and never notices a worker that died. geoml-hub keeps its own
table, ``geoml_jobs``, in the same database (a SQLite file or PostgreSQL) and drives
it from :mod:`geoml_hub.wps.jobs.dispatcher`.

States (``state`` column)::

    queued -> running -> succeeded | failed
    queued | running -> dismissed          (cancelled by its owner or an admin)
    succeeded | failed -> dismissed        (dismissed after it ended: its outputs removed;
                                            OGC API - Processes' DELETE /jobs/{id})

Every state change is a single conditional ``UPDATE ... WHERE state = <expected>``, so
two server processes sharing the database never both start, finish or cancel a job.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional

import sqlalchemy as sa
from pywps import configuration, dblog
from pywps.exceptions import NoApplicableCode
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from ...web.proctree import alive, process_start_ticks

LOGGER = logging.getLogger("geoml_hub.wps")

QUEUED, RUNNING, SUCCEEDED, FAILED, DISMISSED = "queued", "running", "succeeded", "failed", "dismissed"
FINAL_STATES = (SUCCEEDED, FAILED, DISMISSED)

_metadata = sa.MetaData()
jobs_table = sa.Table(
    "geoml_jobs", _metadata,
    sa.Column("uuid", sa.String(64), primary_key=True),
    sa.Column("identifier", sa.String(255), nullable=False),
    sa.Column("owner", sa.String(255), nullable=False, index=True),
    sa.Column("mode", sa.String(8), nullable=False, default="async"),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("percent", sa.Float, nullable=False, default=0.0),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("created", sa.DateTime, nullable=False),
    sa.Column("started", sa.DateTime, nullable=True),
    sa.Column("finished", sa.DateTime, nullable=True),
    sa.Column("host", sa.String(255), nullable=True),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("pid_start", sa.BigInteger, nullable=True),
    sa.Column("request", sa.Text, nullable=True),
    sa.Column("outputs_removed", sa.DateTime, nullable=True),
    sa.Column("published", sa.Boolean, nullable=False, default=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=1, server_default="1"),
)

HOST = socket.gethostname()
#: ``host`` of a job that runs as a Kubernetes Job (see geoml_hub.wps.jobs.kubernetes): any server may watch it.
CLUSTER_HOST = "kubernetes-job"


#: Set when a job was queued: the dispatcher of this process (if any) looks at the queue at once.
_WAKE = threading.Event()


def wake() -> None:
    """Ask the dispatcher of this process (if any) to look at the queue now."""
    _WAKE.set()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def worker_alive(pid: Optional[int], pid_start: Optional[int]) -> bool:
    """Whether the worker ``pid`` started at ``pid_start`` ticks is still running
    (:func:`geoml_hub.web.proctree.alive`)."""
    return alive(pid, pid_start)


#: How long a SQLite connection waits for another writer's lock (SQLite's default in Python: 5 s).
SQLITE_BUSY_TIMEOUT_MS = 60000
#: Serialises queue-limited submissions on PostgreSQL (``pg_advisory_xact_lock``; any constant key).
_PG_SUBMIT_LOCK = 0x67656F6D


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """Every new SQLite connection: WAL (readers never wait for the single writer), a busy timeout
    of :data:`SQLITE_BUSY_TIMEOUT_MS` and ``synchronous=NORMAL`` (durable across process crashes
    with WAL)."""
    cur = dbapi_connection.cursor()
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str) -> sa.engine.Engine:
    """The SQLAlchemy engine for the WPS's database ``url`` (the job table and PyWPS's request log).

    SQLite: a pool of connections that each get :func:`_sqlite_pragmas`; PostgreSQL: a pool with
    pre-ping. Not to be shared across a fork (see :func:`store_for`).
    """
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, poolclass=QueuePool, pool_size=4, max_overflow=16,
                                  connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000.0,
                                                "check_same_thread": False})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, poolclass=QueuePool, pool_size=4, max_overflow=16, pool_pre_ping=True)


def _add_missing_columns(engine) -> None:
    """Add columns introduced after a database was created (``attempts``)."""
    have = {c["name"] for c in sa.inspect(engine).get_columns(jobs_table.name)}
    if "attempts" in have:
        return
    try:
        with engine.begin() as c:
            c.exec_driver_sql("ALTER TABLE geoml_jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1")
    except sa.exc.DBAPIError:  # another process added it at the same moment
        have = {c["name"] for c in sa.inspect(engine).get_columns(jobs_table.name)}
        if "attempts" not in have:
            raise


@dataclass
class Job:
    """One row of the job table (see the module docstring for ``state``)."""

    uuid: str
    identifier: str
    owner: str
    mode: str
    state: str
    percent: float
    message: Optional[str]
    created: dt.datetime
    started: Optional[dt.datetime]
    finished: Optional[dt.datetime]
    host: Optional[str]
    pid: Optional[int]
    pid_start: Optional[int]
    request: Optional[str]
    outputs_removed: Optional[dt.datetime]
    published: bool
    attempts: int = 1

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def as_dict(self, status_url: Optional[str] = None) -> Dict:
        """JSON-ready summary (no request body, no pid)."""
        def iso(t):
            return t.isoformat(timespec="seconds") + "Z" if t else None

        out = {"job_id": self.uuid, "process": self.identifier, "owner": self.owner, "mode": self.mode,
               "status": self.state, "percent": round(self.percent or 0.0, 1), "message": self.message,
               "created": iso(self.created), "started": iso(self.started), "finished": iso(self.finished),
               "outputs_removed": iso(self.outputs_removed), "published": bool(self.published),
               "attempts": int(self.attempts or 1)}
        if status_url:
            out["status_location"] = status_url
        return out


class JobStore:
    """Access to the ``geoml_jobs`` table of one database.

    Parameters
    ----------
    url : str
        SQLAlchemy URL: ``sqlite:////abs/path.sqlite`` or ``postgresql://...``.
    """

    def __init__(self, url: str):
        self.url = url
        # Pooled connections: opening a SQLite connection per statement made every close the last
        # one, so SQLite checkpointed and deleted the WAL each time (docs/benchmarks.md, section 5).
        # A pool must not cross a fork: see store_for() and _after_fork().
        self.engine = make_engine(url)
        _metadata.create_all(self.engine)
        _add_missing_columns(self.engine)

    # -- writes -------------------------------------------------------------------------------
    def submit(self, uuid: str, identifier: str, owner: str, request: Optional[str], mode: str = "async",
               state: str = QUEUED, message: str = "queued", max_queued: int = 0) -> bool:
        """Record a new job.

        With ``max_queued`` > 0 the job is recorded only while fewer than ``max_queued`` jobs are
        queued, checked and inserted in one statement (one ``INSERT ... SELECT ... WHERE (SELECT
        count(*) ...) < max_queued``; on PostgreSQL under a transaction-level advisory lock, as its
        READ COMMITTED snapshots would let two such statements both see room).

        Returns
        -------
        bool
            Whether the job was recorded (``False``: the queue is full).
        """
        now = utcnow()
        running = state == RUNNING
        values = dict(uuid=str(uuid), identifier=identifier, owner=owner, mode=mode, state=state, percent=0.0,
                      message=message, created=now, started=now if running else None,
                      host=HOST if running else None, pid=os.getpid() if running else None,
                      pid_start=process_start_ticks(os.getpid()) if running else None,
                      request=request, published=False, attempts=1)
        with self.engine.begin() as c:
            if not max_queued:
                c.execute(jobs_table.insert().values(**values))
                return True
            if c.dialect.name == "postgresql":
                c.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_SUBMIT_LOCK)))
            queued = (sa.select(sa.func.count()).select_from(jobs_table)
                      .where(jobs_table.c.state == QUEUED).scalar_subquery())
            row = sa.select(*[sa.literal(v, jobs_table.c[k].type).label(k) for k, v in values.items()])
            c.execute(jobs_table.insert().from_select(list(values), row.where(queued < int(max_queued))))
            # (the rowcount of INSERT ... SELECT is not reported by every driver: look the row up)
            return c.execute(sa.select(jobs_table.c.uuid).where(jobs_table.c.uuid == str(uuid))).first() is not None

    def _transition(self, uuid: str, expected, **values) -> bool:
        expected = (expected,) if isinstance(expected, str) else tuple(expected)
        with self.engine.begin() as c:
            res = c.execute(jobs_table.update()
                            .where(jobs_table.c.uuid == str(uuid), jobs_table.c.state.in_(expected))
                            .values(**values))
            return res.rowcount == 1

    def rerun(self, uuid: str, message: str) -> bool:
        """A running job starts over in a new worker without going back to the queue (the
        Kubernetes Job controller replaced its deleted pod): ``attempts`` + 1, progress 0."""
        return self._transition(uuid, RUNNING, percent=0.0, message=message, attempts=jobs_table.c.attempts + 1)

    def claim(self, uuid: str) -> bool:
        """Mark a queued job running on this host; ``False`` if someone else took it."""
        return self._transition(uuid, QUEUED, state=RUNNING, started=utcnow(), host=HOST,
                                message="starting", pid=None, pid_start=None)

    def requeue(self, uuid: str, message: str) -> bool:
        """Put a running job back in the queue (its worker was stopped); ``False`` if it is not running."""
        return self._transition(uuid, RUNNING, state=QUEUED, started=None, pid=None, pid_start=None, percent=0.0,
                                message=message)

    def retry(self, uuid: str, message: str) -> bool:
        """Put a running job whose worker was killed back in the queue for another attempt
        (``attempts`` + 1); ``False`` if it is not running."""
        return self._transition(uuid, RUNNING, state=QUEUED, started=None, host=None, pid=None, pid_start=None,
                                percent=0.0, message=message, attempts=jobs_table.c.attempts + 1)

    def set_worker(self, uuid: str, pid: int) -> None:
        self._transition(uuid, RUNNING, pid=pid, pid_start=process_start_ticks(pid))

    def set_cluster_job(self, uuid: str, message: str) -> bool:
        """Mark a running job as handed to a Kubernetes Job (``host`` = :data:`CLUSTER_HOST`)."""
        return self._transition(uuid, RUNNING, host=CLUSTER_HOST, pid=None, pid_start=None, message=message)

    def note(self, uuid: str, message: str) -> bool:
        """Set the message of a running job that has not reported progress yet (a pending pod's
        reason); ``False`` once the worker has written its own status."""
        with self.engine.begin() as c:
            q = jobs_table.update().where(
                jobs_table.c.uuid == str(uuid), jobs_table.c.state == RUNNING, jobs_table.c.percent == 0.0,
                sa.or_(jobs_table.c.message == "starting", jobs_table.c.message.like("Kubernetes%")))
            return c.execute(q.values(message=message)).rowcount == 1

    def progress(self, uuid: str, percent: float, message: str) -> bool:
        """Record a running job's progress; ``False`` when the job is no longer running (it was
        dismissed or failed meanwhile: its final state stands)."""
        return self._transition(uuid, RUNNING, percent=float(percent), message=message)

    def finish(self, uuid: str, state: str, message: str, expected=(QUEUED, RUNNING)) -> bool:
        """Set a final state unless the job already has one (first writer wins)."""
        assert state in FINAL_STATES
        values = dict(state=state, message=message, finished=utcnow())
        if state == SUCCEEDED:
            values["percent"] = 100.0
        return self._transition(uuid, expected, **values)

    def dismiss_ended(self, uuid: str, message: str) -> bool:
        """Dismiss a job that has ended (succeeded or failed): state ``dismissed``, ``message``,
        ``outputs_removed`` now, ``published`` off; its ``finished`` time stays. ``False`` when
        the job has not ended or was dismissed already."""
        return self._transition(uuid, (SUCCEEDED, FAILED), state=DISMISSED, message=message,
                                outputs_removed=utcnow(), published=False)

    def mark_outputs_removed(self, uuid: str) -> None:
        with self.engine.begin() as c:
            c.execute(jobs_table.update().where(jobs_table.c.uuid == str(uuid))
                      .values(outputs_removed=utcnow()))

    def set_published(self, uuid: str, published: bool = True) -> None:
        with self.engine.begin() as c:
            c.execute(jobs_table.update().where(jobs_table.c.uuid == str(uuid)).values(published=published))

    # -- reads --------------------------------------------------------------------------------
    def get(self, uuid: str) -> Optional[Job]:
        with self.engine.connect() as c:
            row = c.execute(jobs_table.select().where(jobs_table.c.uuid == str(uuid))).mappings().first()
        return Job(**row) if row else None

    def list(self, owner: Optional[str] = None, states=None, limit: Optional[int] = None,
             oldest_first: bool = False, identifiers=None) -> List[Job]:
        """Jobs, newest first (or ``oldest_first``), of ``owner``, in ``states``, of the processes
        ``identifiers`` (each filter only when given), at most ``limit``."""
        q = jobs_table.select()
        if owner is not None:
            q = q.where(jobs_table.c.owner == owner)
        if identifiers:
            q = q.where(jobs_table.c.identifier.in_(tuple(identifiers)))
        if states:
            q = q.where(jobs_table.c.state.in_(tuple(states)))
        q = q.order_by(jobs_table.c.created.asc() if oldest_first else jobs_table.c.created.desc())
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as c:
            return [Job(**r) for r in c.execute(q).mappings().all()]

    def published(self, limit: int = 500) -> List[Job]:
        """Published jobs of every owner, newest first (the shared results)."""
        q = (jobs_table.select().where(jobs_table.c.published.is_(True), jobs_table.c.outputs_removed.is_(None))
             .order_by(jobs_table.c.finished.desc()).limit(limit))
        with self.engine.connect() as c:
            return [Job(**r) for r in c.execute(q).mappings().all()]

    def counts(self) -> Dict[str, int]:
        q = sa.select(jobs_table.c.state, sa.func.count()).group_by(jobs_table.c.state)
        with self.engine.connect() as c:
            out = {s: n for s, n in c.execute(q).all()}
        return {s: out.get(s, 0) for s in (QUEUED, RUNNING, SUCCEEDED, FAILED, DISMISSED)}

    def expired(self, before: dt.datetime) -> List[Job]:
        """Finished jobs that ended before ``before`` and still have their outputs."""
        q = (jobs_table.select().where(jobs_table.c.state.in_(FINAL_STATES), jobs_table.c.finished < before,
                                       jobs_table.c.outputs_removed.is_(None)))
        with self.engine.connect() as c:
            return [Job(**r) for r in c.execute(q).mappings().all()]

    def dispose(self) -> None:
        self.engine.dispose()


_STORES: Dict[str, JobStore] = {}


def store_for(url: str) -> JobStore:
    """One :class:`JobStore` per database URL and process (a forked child makes its own)."""
    key = f"{os.getpid()}:{url}"
    if key not in _STORES:
        _STORES[key] = JobStore(url)
    return _STORES[key]


def _after_fork() -> None:
    # pooled connections inherited from the parent belong to the parent: forget them here
    # without closing them (closing would disturb the parent's use of the same sockets/files)
    for key, store in list(_STORES.items()):
        store.engine.dispose(close=False)
        del _STORES[key]


os.register_at_fork(after_in_child=_after_fork)


# -- PyWPS's request log ----------------------------------------------------------------------------
#: What a client is told when the database fails (the detail goes to the server log only).
DATABASE_UNAVAILABLE = "the job database is busy or unavailable; please try again later"


def database_unavailable(exc: BaseException):
    """Log a database error with its detail and return the generic
    :class:`pywps.exceptions.NoApplicableCode` (HTTP 503) that clients get instead: SQL statements
    and driver messages never reach them."""
    LOGGER.error("database error (the client was told only that the database is unavailable): %s", exc)
    return NoApplicableCode(DATABASE_UNAVAILABLE, code=503)


def _guarded(method):
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sa.exc.SQLAlchemyError as exc:
            try:
                Session.rollback(self)
            except sa.exc.SQLAlchemyError:
                pass
            raise database_unavailable(exc) from None

    call.__name__, call.__doc__ = method.__name__, method.__doc__
    return call


class RequestLogSession(Session):
    """The session of PyWPS's request log (``pywps.dblog``): bound to the pooled engine of this
    process's :class:`JobStore` (WAL and busy timeout on SQLite; safe across forks), and a database
    error becomes a generic ExceptionReport instead of a 500 or a message holding the SQL."""

    def get_bind(self, *args, **kwargs):
        return store_for(self.info["geoml_url"]).engine

    execute = _guarded(Session.execute)
    flush = _guarded(Session.flush)
    commit = _guarded(Session.commit)


def install_request_log(url: str) -> None:
    """Make PyWPS's request log use :class:`RequestLogSession` on database ``url``.

    PyWPS 4.8 builds its own engine for the logging database: a new SQLite connection per
    session with Python's 5 s lock timeout and no busy timeout, whose ``database is locked``
    answered concurrent GetCapabilities with a 500 or a 400 holding the SQL statement. Its
    session factory is replaced here (for the database PyWPS's configuration names now); call
    after the configuration is loaded.
    """
    configured = configuration.get_config_value("logging", "database")
    engine = store_for(url).engine
    dblog.ProcessInstance.metadata.create_all(engine)
    with dblog.lock:
        dblog._SESSION_MAKER = sessionmaker(class_=RequestLogSession, info={"geoml_url": url})
        dblog._SESSION_MAKER_DATABASE = configured
