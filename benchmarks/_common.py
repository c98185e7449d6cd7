"""Shared helpers of the geoml-hub benchmarks (standard library only).

The orchestrating process of every benchmark imports nothing heavy: each measured case
runs in a fresh child process (``python bench_x.py --case NAME ...``) and its peak
resident memory is read from the kernel with ``os.wait4`` (the ``ru_maxrss`` of that one
child, i.e. what ``resource.getrusage(RUSAGE_CHILDREN)`` would report in a parent that
ran only this child). The parent is kept small because Linux folds the parent's
high-water mark into a ``vfork``/``fork`` child's ``ru_maxrss`` at ``exec`` time: a
stdlib-only parent (~15 MiB) stays far below the figure of any measured case.

Children report their result as JSON in a file given by ``--result-file``. They also
run :class:`PeakSampler`, which samples ``/proc/self/status`` every 20 ms and reports the
peak anonymous (heap) and file-backed (memory-mapped files) resident memory; those two
are informative breakdowns, ``ru_maxrss`` is the figure of record.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "geoml-bench"
MiB = 1024 * 1024


# ---------------------------------------------------------------------------
# parent side


def run_case(script: Path, case: str, args: Sequence[str], workdir: Path, env: Optional[Dict[str, str]] = None,
             label: Optional[str] = None, quiet: bool = False) -> Dict:
    """Run ``python script --case case args`` in a fresh process; return its result and peak RSS.

    Returns
    -------
    dict
        ``result`` (the child's JSON), ``peak_rss_mib`` (``ru_maxrss`` of the child),
        ``process_seconds`` (wall time of the whole child, interpreter start included),
        ``user_seconds`` / ``system_seconds`` (CPU time of the child).

    Raises
    ------
    RuntimeError
        If the child fails (its stderr tail is in the message).
    """
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    tag = label or case
    stamp = f"{tag}-{os.getpid()}-{time.monotonic_ns()}"
    result_file = logs / f"{stamp}.json"
    out_path, err_path = logs / f"{stamp}.out", logs / f"{stamp}.err"
    cmd = [sys.executable, str(script), "--case", case, "--result-file", str(result_file), *map(str, args)]
    child_env = dict(os.environ)
    child_env.update(env or {})
    if not quiet:
        print(f"  [{tag}] running ...", end="", flush=True)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=child_env, cwd=str(HERE))
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not result_file.exists():
        tail = err_path.read_text(errors="replace")[-3000:]
        if not quiet:
            print(" FAILED")
        raise RuntimeError(f"case {tag} failed (exit {proc.returncode}); command: {' '.join(cmd)}\n{tail}")
    result = json.loads(result_file.read_text())
    peak = usage.ru_maxrss / 1024  # Linux: kilobytes
    load_after = os.getloadavg()[0]
    if not quiet:
        print(f" {wall:.1f} s, peak RSS {peak:.0f} MiB (1-min load average {load_before:.1f} -> {load_after:.1f})")
    return {"case": case, "label": tag, "result": result, "peak_rss_mib": round(peak, 1),
            "process_seconds": round(wall, 3), "user_seconds": round(usage.ru_utime, 3),
            "system_seconds": round(usage.ru_stime, 3), "env": env or {},
            "load_average_1min": [round(load_before, 2), round(load_after, 2)]}


def disk_free_gib(path: Path) -> float:
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free / 1024 ** 3


def require_disk(path: Path, need_gib: float, what: str) -> None:
    """Stop with a clear message when ``path`` lacks ``need_gib`` GiB (plus 1 GiB of margin)."""
    free = disk_free_gib(path)
    print(f"  disk: {what} needs ~{need_gib:.2f} GiB under {path}; {free:.1f} GiB free")
    if free < need_gib + 1.0:
        raise SystemExit(f"not enough free disk under {path}: need ~{need_gib:.1f} GiB + 1 GiB margin, "
                         f"have {free:.1f} GiB (use --workdir elsewhere)")


def machine_info() -> Dict:
    """CPU model, cores, RAM, OS and Python; library versions are asked of a child (heavy imports)."""
    info: Dict = {"python": platform.python_version(), "platform": platform.platform(),
                  "cpu_count": os.cpu_count(), "date": datetime.datetime.now().isoformat(timespec="seconds")}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "Socket(s)"):
                info["lscpu " + key.strip()] = value.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    info["ram_gib"] = round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    try:
        info["load_average_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def library_versions() -> Dict:
    """Versions of the libraries measured, asked of a child process."""
    code = ("import json, numpy, torch, rasterio, pycm, sklearn, geoml_hub; print(json.dumps({"
            "'numpy': numpy.__version__, 'torch': torch.__version__, 'torch_threads': torch.get_num_threads(), "
            "'rasterio': rasterio.__version__, 'gdal': rasterio.__gdal_version__, 'pycm': pycm.__version__, "
            "'scikit-learn': sklearn.__version__, 'geoml_hub': geoml_hub.__version__}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": out.stderr[-500:]}


def write_json(path: Path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def table(rows: List[List], header: List[str]) -> str:
    """A plain-text table."""
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}"
    return str(v)


def parse_int_list(text: str) -> List[int]:
    return [int(float(v)) for v in str(text).split(",") if v.strip()]


def common_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                   help=f"where generated data, outputs and logs go (default {DEFAULT_WORKDIR})")
    p.add_argument("--out", type=Path, default=None, help="JSON file of results (default: WORKDIR/<bench>.json)")
    p.add_argument("--keep-data", action="store_true", help="keep the generated data (reused by the next run)")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    return p


# ---------------------------------------------------------------------------
# child side


class PeakSampler:
    """Sample this process's resident memory every ``interval`` s from ``/proc/self/status``.

    Used as a context manager in child processes; :meth:`report` gives the peaks in MiB of
    ``VmRSS`` (total), ``RssAnon`` (heap: NumPy/PyTorch/GDAL buffers) and ``RssFile``
    (pages of memory-mapped files and shared libraries), and ``VmHWM`` (kernel's peak).
    """

    FIELDS = ("VmRSS", "RssAnon", "RssFile")

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peaks = {k: 0 for k in self.FIELDS}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    key, _, value = line.partition(":")
                    if key in self.peaks:
                        self.peaks[key] = max(self.peaks[key], int(value.split()[0]))
        except OSError:
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "PeakSampler":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @staticmethod
    def current_mib() -> float:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def report(self) -> Dict[str, float]:
        out = {f"sampled_peak_{k}_mib": round(v / 1024, 1) for k, v in self.peaks.items()}
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    out["VmHWM_mib"] = round(int(line.split()[1]) / 1024, 1)
        return out


def child_result(path: Path, result: Dict) -> None:
    """Write a child's result (the parent reads it after the child exits)."""
    write_json(path, result)


def gib(nbytes: float) -> float:
    return nbytes / 1024 ** 3


def bench_main(argv, doc: str, name: str, add_args, hidden: Sequence[str], cases: Dict, run, print_results) -> Dict:
    """The ``main`` of every ``bench_*.py``: parse options; as a child, run one case and hand
    back its result; as the parent, run every case, print the table and write ``<name>.json``."""
    p = add_args(common_parser(doc.splitlines()[1]))
    for option in hidden:  # set by the parent for its children
        p.add_argument(option, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.case:
        child_result(args.result_file, cases[args.case](args))
        return {}
    res = run(args)
    print_results(res)
    out = args.out or args.workdir / f"{name}.json"
    write_json(out, {"machine": machine_info(), name: res})
    print(f"  results: {out}")
    return res
