"""A throw-away PostgreSQL server on loopback (Debian's packages, installed by ``.ci/run``).

As root, ``initdb`` and ``postgres`` run as the ``postgres`` user (PostgreSQL refuses to
run as root); the cluster lives in a fresh directory under /tmp and is removed at the end.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List

from wps_server import free_port


def pg_bin() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` (Debian's layout)."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if not dirs:
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql (see .ci/run)")
    return Path(dirs[-1])


class Postgres:
    """``with Postgres() as pg: pg.url`` — a PostgreSQL cluster with trust auth on 127.0.0.1."""

    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="geoml-pg-"))
        self.data = self.dir / "data"
        self.as_root = os.geteuid() == 0

    def _run(self, args: List[str]) -> None:
        cmd = [str(a) for a in args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> "Postgres":
        if self.as_root:
            os.chmod(self.dir, 0o755)
            shutil.chown(self.dir, "postgres", "postgres")
        b = pg_bin()
        self._run([b / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        self._run([b / "pg_ctl", "-D", self.data, "-w", "-l", self.dir / "log",
                   "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200",
                   "start"])
        import sqlalchemy as sa

        deadline = time.monotonic() + 30
        while True:
            try:
                eng = sa.create_engine(self.url)
                with eng.connect() as c:
                    c.execute(sa.text("select 1"))
                eng.dispose()
                return self
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        try:
            self._run([pg_bin() / "pg_ctl", "-D", self.data, "-m", "immediate", "stop"])
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Postgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
