"""The ``geoml-hub`` command line.

Sub-commands: ``extract``, ``balance``, ``train``, ``evaluate``, ``compatibility``, ``classify``,
``validate``, ``compare`` and ``pipeline``. Long steps show a progress bar (on stderr).
Expected errors print one line, ``geoml-hub: error: ...``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import configparser
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence

from tqdm import tqdm

from . import __version__, params
from .balancing import BalanceParams, balance_samples
from .catalog import Cache, build_catalog, file_hrefs, save_catalog
from .classification import ClassifyParams, as_model, classify_scene
from .compatibility import CompatibilityParams, check_compatibility, quick_check
from .errors import GeomlError, ParameterError
from .extraction import extract_samples
from .pipeline import check_parameters, run_patch_pipeline, run_scene_pipeline
from .samples import load_samples
from .scene import _open, check_readable, check_same_grid
from .selection import SelectParams
from .training import TrainConfig, _replace, train_model
from .validation import EvaluateParams, compare_classifications, evaluate_model, validate_classification


@contextmanager
def progress_bar(enabled: bool, desc: str) -> Iterator:
    """A tqdm bar on stderr driven by a ``progress(fraction, message)`` callback (none when stderr is
    not a terminal, so logs stay clean)."""
    if not enabled:
        yield None
        return
    bar = tqdm(total=1000, desc=desc, unit="‰", leave=False, file=sys.stderr, disable=None,  # off when not a TTY
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")

    def update(fraction: float, message: str) -> None:
        bar.n = int(fraction * 1000)
        bar.set_postfix_str(message[:60], refresh=False)
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def format_qc(summary: Dict) -> str:
    """A plain-text QC summary: overall accuracy, kappa and the per-class table."""
    def f(v):
        return "  n/a" if v is None else f"{v:5.3f}"

    lines = [f"overall accuracy {f(summary['overall_accuracy'])}   kappa {f(summary['kappa'])}   "
             f"n {summary['n']}" + (f"   unclassified {summary['unclassified']}" if summary.get("unclassified") else "")]
    width = max([len(c) for c in summary["classes"]] + [5])
    lines.append(f"{'class':<{width}}  PPV (user's)  TPR (producer's)     F1  reference")
    for c in summary["classes"]:
        lines.append(f"{c:<{width}}  {f(summary['ppv'][c]):>12}  {f(summary['tpr'][c]):>16}  {f(summary['f1'][c]):>5}"
                     f"  {summary['reference_counts'][c]:>9}")
    return "\n".join(lines)


def _floats(text: Optional[str], option: str = "--reference-nodata") -> Optional[float]:
    if text is None or text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise GeomlError(f"{option} expects a number or 'none', got {text!r}") from None


def _class_names(text: Optional[str]) -> Optional[Dict[int, str]]:
    if not text:
        return None
    out = {}
    for item in text.split(","):
        code, sep, name = item.partition("=")
        if not sep:
            raise GeomlError(f"--class-names expects CODE=NAME pairs separated by commas, got {item!r}")
        try:
            out[int(code)] = name.strip()
        except ValueError:
            raise GeomlError(f"--class-names expects integer codes, got {code!r} in {item!r}") from None
    return out


def _plain(text: str) -> str:
    """Docstring text without its reST markup (````code````), for help pages."""
    return text.replace("``", "")


#: The page of each sub-command (``geoml-hub COMMAND -h``).
DESCRIPTIONS = {
    "extract": "Extract the labelled pixels (or patches around them) of a scene into a training-sample tree: one "
               "folder per class, one .npy file per labelled region, classes.json and regions.csv. The label "
               "raster must be on the scene's grid.",
    "balance": "Cluster-based balancing of a training sample (the ISDCT Geoportal algorithm): k-means clusters "
               "per class, rare clusters kept whole, every step-th sample of the others. Writes manifest.csv, "
               "summary.json and clusters.png into --out.",
    "train": "Train a CNN (pixel or patch classifier) on a training-sample tree or manifest. Writes the model "
             "file, MODEL.history.csv and MODEL.curves.png.",
    "evaluate": "Patch-level quality control of a model: predict every sample of a tree or manifest and compare "
                "with its class (PyCM). Writes summary.json, report.html, report.csv, predictions.csv and "
                "confusion_matrix.png into --out.",
    "compatibility": "Compare a scene (or a training-sample tree) with the model's training data, band by band: "
                     "standardised mean shift, share of pixels outside the training 1-99 % range, distribution "
                     "distance, share of low-confidence predictions; says whether the model is fit for it. Writes "
                     "summary.json and compatibility.png into --out.",
    "classify": "Classify a scene window by window into a uint8 classification GeoTIFF (255: nodata). A quick "
                "compatibility check runs first and prints a warning when the model is not fit for the scene "
                "(the classification runs anyway); --confidence also writes the probability of the predicted class.",
    "validate": "PyCM quality control of a classification raster on the labelled pixels of a reference raster "
                "on the same grid. Writes summary.json, report.html, report.csv and confusion_matrix.png into --out; "
                "with --confidence also the accuracy per confidence bin (summary.json and reliability.png).",
    "compare": "Compare two classifications (two versions of a method) against one reference: each is validated "
               "into --out/NAME/, and comparison.csv and summary.json name the better one (higher overall "
               "accuracy, then kappa).",
    "pipeline": "End to end. With a training-sample tree: held-out split, balance, train, evaluate. With --scene "
                "and --reference: spatial split of the labelled regions, extract, balance, train, classify, "
                "validate. Every parameter and input is checked before anything is written.",
    "up": "Start JupyterHub, the WPS service, the web map and the idle culler on this machine (docs/user.md).",
    "down": "Stop everything geoml-hub up started.",
    "wps": "The OGC WPS server (docs/wps.md).",
    "map": "The web map service (docs/map.md).",
}

#: What each sub-command's --out names: a directory or a file.
OUT_KINDS = {"extract": "dir", "balance": "dir", "train": "file", "evaluate": "dir", "compatibility": "dir",
             "classify": "file",
             "validate": "dir", "compare": "dir", "pipeline": "dir"}

_FLAG_ACTIONS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction,
                 argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append ``(default X)`` to the help of every option of ``parser`` and its sub-commands whose
    help does not give its default already (flags and options without a default excepted)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                _show_defaults(sub)
            continue
        if isinstance(action, _FLAG_ACTIONS) or action.help in (None, argparse.SUPPRESS):
            continue
        if action.default not in (None, argparse.SUPPRESS) and "default" not in action.help.lower():
            action.help += " (default %(default)s)"


def _add_train_options(p: argparse.ArgumentParser, skip=()) -> None:
    g = p.add_argument_group("training (defaults: the recommended settings, docs/training.md)")
    params.add_cli_options(g, TrainConfig, skip=skip)


def _add_balance_options(p: argparse.ArgumentParser, skip=()) -> None:
    params.add_cli_options(p.add_argument_group("balancing"), BalanceParams, skip=skip)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geoml-hub", description=_plain(__doc__))
    parser.add_argument("--version", action="version", version=f"geoml-hub {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars (before or after COMMAND)")
    # -q after the sub-command too: the same option in every sub-command (SUPPRESS: absent unless given,
    # so it never overrides a -q given before the sub-command)
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")

    class Sub:
        """``add_subparsers`` whose sub-commands take -q and show a description."""

        def __init__(self, action, prefix=""):
            self.action, self.prefix = action, prefix

        def add_parser(self, name, help, description=None, **kw):
            return self.action.add_parser(name, help=help, parents=[quiet],
                                          description=description or DESCRIPTIONS.get(self.prefix + name)
                                          or help[:1].upper() + help[1:] + ".", **kw)

    sub = Sub(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))

    p = sub.add_parser("extract", help="labelled pixels of a scene -> training-sample tree")
    p.add_argument("scene", nargs="+", help="one multi-band GeoTIFF or single-band files on one grid")
    p.add_argument("--reference", required=True, help="label raster on the scene's grid")
    p.add_argument("--out", required=True, help="training-sample tree to write")
    p.add_argument("--patch-size", type=int, default=1, help="odd window edge in pixels (default 1)")
    p.add_argument("--reference-nodata", default="0", help="unlabelled value (default 0)")
    p.add_argument("--class-names", help="CODE=NAME,... (default: the codes)")
    p.add_argument("--ignore-crs-name", action="store_true", help="accept CRSs that differ only in name")

    p = sub.add_parser("balance", help="cluster-based balancing of a training sample")
    p.add_argument("samples", help="training-sample tree or manifest.csv")
    p.add_argument("--out", required=True, help="directory for manifest.csv, summary.json, clusters.png")
    _add_balance_options(p)

    p = sub.add_parser("train", help="train a CNN on a tree or manifest")
    p.add_argument("samples", help="training-sample tree or manifest.csv")
    p.add_argument("--out", required=True, help="model file to write (e.g. model.pt)")
    _add_train_options(p)

    p = sub.add_parser("evaluate", help="patch-level QC of a model on a tree or manifest")
    p.add_argument("model", help="model file written by geoml-hub train")
    p.add_argument("samples", help="training-sample tree or manifest.csv (samples with their classes)")
    p.add_argument("--out", required=True, help="directory for the QC reports (created if missing)")
    params.add_cli_options(p, EvaluateParams)

    p = sub.add_parser("compatibility", help="is a model fit for a scene (or sample tree)? spectral check")
    p.add_argument("model", help="model file written by geoml-hub train")
    p.add_argument("scene", nargs="+", help="one multi-band GeoTIFF or single-band files on one grid, or one "
                                            "training-sample tree or manifest.csv")
    p.add_argument("--out", required=True, help="directory for summary.json and compatibility.png (created if missing)")
    params.add_cli_options(p, CompatibilityParams)

    p = sub.add_parser("classify", help="classify a scene into a uint8 GeoTIFF")
    p.add_argument("model", help="model file written by geoml-hub train")
    p.add_argument("scene", nargs="+", help="one multi-band GeoTIFF or single-band files on one grid")
    p.add_argument("--out", required=True, help="classification GeoTIFF to write")
    p.add_argument("--confidence", metavar="OUT.tif",
                   help="also write the probability of the predicted class: float32 GeoTIFF in [0, 1] on the same "
                        "grid, nodata -1")
    params.add_cli_options(p, ClassifyParams)

    p = sub.add_parser("validate", help="PyCM QC of a classification on labelled reference pixels")
    p.add_argument("classification", help="single-band classification GeoTIFF (class codes)")
    p.add_argument("reference", help="single-band label raster on the classification's grid")
    p.add_argument("--out", required=True, help="directory for the QC reports (created if missing)")
    p.add_argument("--reference-nodata", default="0", help="unlabelled value (default 0; 'none': file nodata)")
    p.add_argument("--ignore-crs-name", action="store_true", help="accept CRSs that differ only in name")
    p.add_argument("--confidence", metavar="CONF.tif",
                   help="confidence raster written by classify --confidence: adds the accuracy per confidence bin")

    p = sub.add_parser("compare", help="compare two classifications against one reference")
    p.add_argument("a", help="first classification GeoTIFF")
    p.add_argument("b", help="second classification GeoTIFF, on the grid of the first")
    p.add_argument("--reference", required=True, help="single-band label raster on the classifications' grid")
    p.add_argument("--out", required=True, help="directory for the reports (created if missing)")
    p.add_argument("--names", default="A,B", help="names of the two versions (default A,B)")
    p.add_argument("--reference-nodata", default="0", help="unlabelled value (default 0; 'none': file nodata)")
    p.add_argument("--ignore-crs-name", action="store_true", help="accept CRSs that differ only in name")

    p = sub.add_parser("pipeline", help="balance -> train -> evaluate (tree) or extract -> ... -> validate (scene)")
    p.add_argument("samples", nargs="?", help="training-sample tree (patch pipeline)")
    p.add_argument("--scene", nargs="+", help="scene files (scene pipeline)")
    p.add_argument("--reference", help="label raster (scene pipeline)")
    p.add_argument("--reference-nodata", default="0", help="unlabelled value of the labels (default 0)")
    p.add_argument("--class-names", help="CODE=NAME,... for the scene's labels (default: the codes)")
    p.add_argument("--patch-size", type=int, default=1, help="scene pipeline sample window (default 1: pixels)")
    p.add_argument("--stride", type=int, help="scene pipeline, patch models: classification stride in pixels "
                                             "(default: half the patch size)")
    p.add_argument("--test-fraction", type=float, help="held-out share (default 0.2 patches, 0.3 scene regions)")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the balancing and the training (default 0)")
    _add_balance_options(p, skip=("seed",))
    params.add_cli_options(p.add_argument_group("model selection (cross-validation, docs/training.md)"),
                           SelectParams)
    # the model family is what the cross-validation chooses among --candidates
    _add_train_options(p, skip=("seed", "model"))

    p = sub.add_parser("catalog", help="a static STAC catalogue of data roots (docs/catalog.md)",
                       description="Write a self-contained static STAC catalogue (pystac) of the data roots into "
                                   "--out: one collection per root, an item per scene or label raster (bbox and "
                                   "geometry in WGS 84, proj:, eo:bands, raster:bands), a child collection per "
                                   "training-sample tree with its class counts. Incremental: rasters whose size "
                                   "and modification time did not change since the last run (OUT.cache.json) "
                                   "are not read again.")
    p.add_argument("--data-root", action="append", metavar="NAME=DIR", required=True,
                   help="a data root, e.g. data=../shared/data (repeatable)")
    p.add_argument("--out", required=True, help="the catalogue's folder (OUT/catalog.json), replaced atomically")
    p.add_argument("--title", default="geoml-hub data", help="the catalogue's title")

    p = sub.add_parser("up", help="JupyterHub + the WPS service + idle culler on this machine (docs/user.md)")
    p.add_argument("--port", type=int, default=8000, help="public port (default 8000)")
    p.add_argument("--ip", default="127.0.0.1", help="public address (default 127.0.0.1; 0.0.0.0: all)")
    p.add_argument("--state-dir", help="hub database, secrets, user homes, WPS state (default ~/.local/state/geoml-hub/hub)")
    p.add_argument("--data-root", help="the shared read-only remote-sensing data (~/data in user servers, data/ in the WPS)")
    p.add_argument("--cull-timeout", type=int, default=3600,
                   help="stop user servers idle this many seconds (default 3600; 0: never, unlimited working time)")
    p.add_argument("--cull-every", type=int, default=60, help="how often the idle culler looks, in seconds")
    p.add_argument("--authenticator", choices=["native", "generic-oauth"], default="native",
                   help="native: passwords in the hub database, sign-up + admin approval (default); "
                        "generic-oauth: OAuth2, settings in --config")
    p.add_argument("--admin", default="admin", help="name of the first admin (default admin)")
    p.add_argument("--profiles", help="profiles YAML (default: the built-in CPU and CUDA GPU profiles)")
    p.add_argument("--config", help="extra JupyterHub config file (Python), applied last")
    p.add_argument("--wps-parallel", type=int, default=2, help="WPS jobs running at once (default 2)")
    p.add_argument("--detach", action="store_true", help="start and return; stop later with geoml-hub down")
    p.add_argument("--single-account", action="store_true",
                   help="as root, run every user's server as root too (default as root: one system account "
                        "jupyter-<name> per user; docs/security.md)")
    p.add_argument("--homes-dir", default="/home", help="as root: homes of the users' accounts (default /home)")
    p.add_argument("--public-dir", default="/srv/geoml-hub",
                   help="as root: what users share read-only, outside the state directory: published results, "
                        "a read-only mount of the data root if needed (default /srv/geoml-hub)")
    p = sub.add_parser("down", help="stop everything geoml-hub up started")
    p.add_argument("--state-dir", help="as given to geoml-hub up (default ~/.local/state/geoml-hub/hub)")

    p = sub.add_parser("wps", help="the OGC WPS server (docs/wps.md)")
    wsub = Sub(p.add_subparsers(dest="wps_command", required=True, metavar="WPS_COMMAND"), "wps ")
    w = wsub.add_parser("serve", help="serve the WPS processes (standalone: loopback, no authentication)")
    w.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    w.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    w.add_argument("--config", help="INI file: a [geoml] section plus optional PyWPS sections (default: none)")
    w.add_argument("--state-dir", help="directory for the database, outputs and job directories "
                                       "(default: the config's, else a per-user state directory)")
    w.add_argument("--data-root", action="append", metavar="NAME=DIR",
                   help="a read-only data root, e.g. data=../shared/data (repeatable)")
    w.add_argument("--database", help="SQLAlchemy URL of the job/logging database (default: SQLite file)")
    w.add_argument("--parallel", type=int, help="jobs running at once (parallelprocesses, default 2)")
    w.add_argument("--max-queued", type=int, help="jobs that may wait (maxprocesses, default 30)")
    w.add_argument("--retention-hours", type=float, help="remove outputs this long after a job ends (default 168)")
    w.add_argument("--job-retries", type=int,
                   help="run a job whose worker was killed again this often before it fails (default 1)")
    w.add_argument("--url", help="public base URL (default http://HOST:PORT)")
    w.add_argument("--auth", choices=["none", "jupyterhub"],
                   help="none: standalone, no authentication (default); jupyterhub: run as a hub service")
    w.add_argument("--shared-results", help="the shared results area for published jobs (default STATE/results)")
    w.add_argument("--server", choices=["gunicorn", "werkzeug"], default="gunicorn",
                   help="gunicorn (default) or the werkzeug development server")
    w.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    w.add_argument("--ready-file", help=argparse.SUPPRESS)
    wsub.add_parser("describe", help="print the process reference (Markdown, as in docs/wps.md)")

    p = sub.add_parser("map", help="the web map service (docs/map.md)")
    msub = Sub(p.add_subparsers(dest="map_command", required=True, metavar="MAP_COMMAND"), "map ")
    m = msub.add_parser("serve", help="serve the web map (standalone: loopback, no authentication)")
    m.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    m.add_argument("--port", type=int, default=5100, help="port (default 5100)")
    m.add_argument("--data-root", action="append", metavar="NAME=DIR",
                   help="a read-only data root, as given to the WPS, e.g. data=../shared/data (repeatable)")
    m.add_argument("--wps-url", default="http://127.0.0.1:5000",
                   help="where the map reaches the WPS (default http://127.0.0.1:5000)")
    m.add_argument("--wps-public-url", help="the WPS's public base URL, if it differs from --wps-url")
    m.add_argument("--url", help="public base URL of the map (default http://HOST:PORT)")
    m.add_argument("--auth", choices=["none", "jupyterhub"], default="none",
                   help="none: standalone, no authentication (default); jupyterhub: run as a hub service")
    m.add_argument("--cache-dir", default="map-cache", help="where fetched job outputs are kept for tiling")
    m.add_argument("--revalidate-seconds", type=float, default=60.0,
                   help="no effect (kept for existing command lines): every use of a cached job output is "
                        "checked with the WPS first")
    m.add_argument("--basemap-url", default="", help="an optional XYZ base map, e.g. https://tiles.example.org/{z}/{x}/{y}.png")
    m.add_argument("--basemap-attribution", default="", help="attribution of the base map")
    m.add_argument("--server", choices=["gunicorn", "werkzeug"], default="gunicorn",
                   help="gunicorn (default) or the werkzeug development server")
    m.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    m.add_argument("--ready-file", help=argparse.SUPPRESS)
    _show_defaults(parser)
    return parser


def check_out(path: str, kind: str, option: str = "--out") -> None:
    """Refuse an ``--out`` that cannot be written: a file where a directory is expected (or the
    other way round), a path under a file, or a directory without write permission.

    Raises
    ------
    GeomlError
    """
    p = Path(path)
    if kind == "dir" and p.exists() and not p.is_dir():
        raise GeomlError(f"{option} {path}: exists and is not a directory (name a new or an existing directory)")
    if kind == "file" and p.is_dir():
        raise GeomlError(f"{option} {path}: is a directory (name the file to write, e.g. {p / 'model.pt'})")
    existing = p.absolute() if kind == "dir" else p.absolute().parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise GeomlError(f"{option} {path}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise GeomlError(f"{option} {path}: no permission to write in {existing}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


@contextmanager
def out_unchanged_on_failure(path: str, kind: str) -> Iterator[None]:
    """On any failure, remove what the command created at ``--out``: the directories it created on
    the way to it, or (``--out`` an existing directory) its new entries, or (a file in an existing
    directory) new files named after it (``model.pt``, ``model.history.csv``, ...). Files are
    written atomically, so what existed before is left as it was."""
    p = Path(path).absolute()
    created = None  # the top-most path on the way to --out that does not exist yet
    q = p
    while not q.exists() and q != q.parent:
        created, q = q, q.parent
    watched, prefix = None, ""
    if kind == "file" and created in (None, p):
        watched, prefix = p.parent, p.stem  # model.pt, model.history.csv, .model.pt.tmp...
    elif kind == "dir" and created is None:
        watched = p
    before = set(os.listdir(watched)) if watched is not None else set()
    try:
        yield
    except BaseException:
        if watched is None:
            _remove(created)
        elif watched.is_dir():
            for name in set(os.listdir(watched)) - before:
                if name.startswith(prefix) or name.startswith("." + prefix):
                    _remove(watched / name)
        raise


def _check_qc_rasters(classifications: Sequence[tuple], reference: str, ignore_crs_name: bool) -> None:
    """Open the classifications and the reference (headers only): single band each, every
    classification on the reference's grid."""
    with _open(reference) as ref:
        if ref.count != 1:
            raise GeomlError(f"reference {reference}: has {ref.count} bands; a single-band label raster is expected")
        for what, path in classifications:
            with _open(path) as cls:
                if cls.count != 1:
                    raise GeomlError(f"{what} {path}: has {cls.count} bands; a single-band raster of class codes "
                                     "is expected")
                check_same_grid(cls, ref, f"{what} {path}", f"reference {reference}", ignore_crs_name)


def preflight(args) -> None:
    """Check every parameter and input of a sub-command (ranges from the declarations, files,
    raster headers, grids) before anything is written.

    Raises
    ------
    GeomlError
    """
    cmd = args.command
    if cmd in OUT_KINDS:
        check_out(args.out, OUT_KINDS[cmd])
    if getattr(args, "reference_nodata", None) is not None:
        _floats(args.reference_nodata)
    if getattr(args, "class_names", None):
        _class_names(args.class_names)
    if cmd == "balance":
        params.check_values(BalanceParams, params.cli_values(args, BalanceParams))
    elif cmd == "train":
        values = params.cli_values(args, TrainConfig)
        params.check_values(TrainConfig, values)
        _replace(TrainConfig(), values).check()
    elif cmd == "evaluate":
        params.check_values(EvaluateParams, params.cli_values(args, EvaluateParams))
    elif cmd == "compatibility":
        params.check_values(CompatibilityParams, params.cli_values(args, CompatibilityParams))
        if not all(Path(s).exists() for s in args.scene):
            missing = [s for s in args.scene if not Path(s).exists()]
            raise GeomlError(f"{missing[0]}: scene or training-sample tree not found")
    elif cmd == "classify":
        params.check_values(ClassifyParams, params.cli_values(args, ClassifyParams))
        if args.confidence is not None:
            check_out(args.confidence, "file", "--confidence")
            if Path(args.confidence).absolute() == Path(args.out).absolute():
                raise GeomlError("--confidence must name another file than --out")
    elif cmd == "validate":
        checked = [("classification", args.classification)]
        if args.confidence:
            checked.append(("confidence raster", args.confidence))
        _check_qc_rasters(checked, args.reference, args.ignore_crs_name)
    elif cmd == "compare":
        names = _compare_names(args.names)
        _check_qc_rasters([(f"classification {names[0]}", args.a), (f"classification {names[1]}", args.b)],
                          args.reference, args.ignore_crs_name)
    elif cmd == "pipeline":
        if args.scene and not args.reference:
            raise GeomlError("pipeline --scene needs --reference LABELS.tif")
        if not args.scene and not args.samples:
            raise GeomlError("pipeline needs SAMPLES_DIR, or --scene SCENE... --reference LABELS.tif")
        if args.scene and args.samples:
            raise GeomlError("pipeline takes SAMPLES_DIR or --scene, not both")
        train = params.cli_values(args, TrainConfig, skip=("seed", "model"))
        balance = params.cli_values(args, BalanceParams, skip=("seed",))
        fraction = args.test_fraction if args.test_fraction is not None else (0.3 if args.scene else 0.2)
        check_parameters(fraction, args.seed, balance, train, cli=True, select=params.cli_values(args, SelectParams))
        if args.stride is not None:
            params.check_value(params.field_param("stride", ClassifyParams.__dataclass_fields__["stride"]),
                               args.stride, "--stride")
        if args.scene:
            if args.patch_size < 1 or args.patch_size % 2 == 0:
                raise GeomlError(f"--patch-size must be a positive odd number of pixels, got {args.patch_size}")
            # the rasters (headers, grid, every pixel block): run_scene_pipeline checks them first thing
        elif not Path(args.samples).exists():
            raise GeomlError(f"{args.samples}: training-sample tree or manifest not found")


def _compare_names(text: str) -> tuple:
    names = tuple(n.strip() for n in text.split(","))
    if len(names) != 2 or not all(names):
        raise GeomlError(f"--names takes two names separated by a comma, got {text!r}")
    if names[0] == names[1]:
        raise GeomlError(f"--names takes two different names, got {text!r}")
    return names


def run(args) -> int:
    quiet = getattr(args, "quiet", False)
    cmd = args.command
    if cmd in OUT_KINDS:
        preflight(args)
        with out_unchanged_on_failure(args.out, OUT_KINDS[cmd]):
            try:
                return _run(args, quiet)
            except Exception as exc:
                _name_unreadable_raster(args, exc)
                raise
    return _run(args, quiet)


def _name_unreadable_raster(args, exc: Exception) -> None:
    """After a GDAL read error (whose message need not name the file), raise a :class:`DataError`
    naming the input raster that cannot be read, if one of the command's inputs is that raster."""
    from rasterio.errors import RasterioError

    if not isinstance(exc, RasterioError):
        return
    paths = []
    for name in ("scene", "reference", "classification", "a", "b"):
        value = getattr(args, name, None)
        paths += value if isinstance(value, list) else [value] if value else []
    for path in paths:
        if Path(path).is_file():
            try:
                check_readable([path])
            except GeomlError as found:
                raise found from None


def _run(args, quiet: bool) -> int:
    cmd = args.command
    if cmd == "extract":
        with progress_bar(not quiet, "extract") as cb:
            res = extract_samples(args.scene, args.reference, args.out, args.patch_size,
                                  _floats(args.reference_nodata), _class_names(args.class_names),
                                  args.ignore_crs_name, progress=cb)
        print(f"wrote {sum(res.counts.values())} samples from {len(res.regions)} regions to {res.root}: "
              + ", ".join(f"{k} {v}" for k, v in res.counts.items()))
    elif cmd == "balance":
        with progress_bar(not quiet, "balance") as cb:
            res = balance_samples(load_samples(args.samples), progress=cb, **params.cli_values(args, BalanceParams))
            res.write(args.out)
        s = res.summary
        print(f"kept {s['total_after']} of {s['total_before']} samples; max/min class ratio "
              f"{s['ratio_before']:.2f} -> {s['ratio_after']:.2f}; wrote {args.out}/manifest.csv")
        for name, c in s["classes"].items():
            print(f"  {name}: {c['before']} -> {c['after']} (step {c['step']}, threshold {c['threshold']})")
    elif cmd == "train":
        with progress_bar(not quiet, "train") as cb:
            res = train_model(args.samples, args.out, progress=cb, **params.cli_values(args, TrainConfig))
        acc = res.val_overall_accuracy
        family = res.config.get("model", "cnn")
        print(f"trained {family} on {res.n_train} samples ({res.n_val} validation) on {res.device} in "
              f"{res.seconds:.0f} s" + (f"; best epoch {res.best_epoch}" if family == "cnn" else "")
              + (f", validation overall accuracy {acc:.3f}" if acc is not None else ""))
        print(f"wrote {res.model_path}, {res.history_path}, {res.curves_path}")
    elif cmd == "evaluate":
        with progress_bar(not quiet, "evaluate") as cb:
            s = evaluate_model(args.model, args.samples, args.out, progress=cb, **params.cli_values(args, EvaluateParams))
        print(format_qc(s))
    elif cmd == "compatibility":
        with progress_bar(not quiet, "compatibility") as cb:
            s = check_compatibility(args.model, args.scene, args.out, progress=cb,
                                    **params.cli_values(args, CompatibilityParams))
        print(s["reason"])
        for b in s["bands"]:
            dist = f"{b['distance']:.2f}" if b["distance"] is not None else "n/a"
            print(f"  band {b['band']} (input band {b['scene_band']}): mean shift {b['mean_shift']:+.2f} σ, "
                  f"{100 * b['outside']:.1f} % outside the training range, distance {dist} σ"
                  + (f"  <- {', '.join(b['failed'])}" if b["failed"] else ""))
        if s["low_confidence_share"] is not None:
            print(f"  {100 * s['low_confidence_share']:.0f} % of {s['classified_samples']} sampled predictions below "
                  f"probability {s['thresholds']['low_confidence']:g}")
        print(f"wrote {args.out}/summary.json, {args.out}/compatibility.png")
    elif cmd == "classify":
        values = params.cli_values(args, ClassifyParams)
        model = as_model(args.model, values["device"])
        if values.pop("compatibility_check"):  # first, so that the warning comes before the progress bar
            checked = quick_check(model, args.scene, values.get("band_map"))
            if checked.get("compatible") is False:
                print(f"geoml-hub: warning: the model may not fit this scene ({checked['reason']}); classifying "
                      "anyway", file=sys.stderr)
        with progress_bar(not quiet, "classify") as cb:
            res = classify_scene(model, args.scene, args.out, progress=cb, compatibility_check=False,
                                 confidence=args.confidence, **values)
        if res.confidence is not None:
            print(f"wrote {res.confidence} (probability of the predicted class, nodata -1)")
        print(f"wrote {res.path} ({res.pixels} pixels, {res.nodata_pixels} nodata, stride {res.stride}): "
              + ", ".join(f"{k} {v}" for k, v in res.counts.items()))
    elif cmd == "catalog":
        run_catalog(args, quiet)
    elif cmd == "validate":
        with progress_bar(not quiet, "validate") as cb:
            s = validate_classification(args.classification, args.reference, args.out, _floats(args.reference_nodata),
                                        ignore_crs_name=args.ignore_crs_name, confidence=args.confidence,
                                        progress=cb)
        print(format_qc(s))
    elif cmd == "compare":
        names = _compare_names(args.names)
        with progress_bar(not quiet, "compare") as cb:
            s = compare_classifications(args.a, args.b, args.reference, args.out, names,
                                        _floats(args.reference_nodata), args.ignore_crs_name, progress=cb)
        for stat in ("overall_accuracy", "kappa", "macro_ppv"):
            row = s["table"][stat]
            print(f"{stat:<17} " + "  ".join(f"{n} {row[n]:.3f}" if row[n] is not None else f"{n} n/a" for n in names))
        print(f"better: {s['better'] or 'tie'} (PyCM Compare: {s['pycm_best'] or 'no verdict'})")
    elif cmd == "wps":
        return run_wps(args)
    elif cmd == "map":
        return run_map(args)
    elif cmd == "up":
        # imported here: each layer needs its own extras (the hub: jupyterhub; the WPS: PyWPS; the
        # map: rio-tiler), and an image installs only its own
        from .hub.up import DEFAULT_STATE, up

        return up(Path(args.state_dir) if args.state_dir else DEFAULT_STATE, foreground=not args.detach,
                  port=args.port, ip=args.ip, data_root=args.data_root, cull_timeout=args.cull_timeout,
                  cull_every=args.cull_every, authenticator=args.authenticator, admin_user=args.admin,
                  profiles_file=args.profiles, extra_config=args.config, wps_parallel=args.wps_parallel,
                  single_account=args.single_account, homes_dir=args.homes_dir, public_dir=args.public_dir)
    elif cmd == "down":
        from .hub.up import DEFAULT_STATE, down  # imported here: see `up`

        return down(Path(args.state_dir) if args.state_dir else DEFAULT_STATE)
    elif cmd == "pipeline":
        train = params.cli_values(args, TrainConfig, skip=("seed", "model"))
        balance = params.cli_values(args, BalanceParams, skip=("seed",))
        select = params.cli_values(args, SelectParams)
        if args.scene:
            if not args.reference:
                raise GeomlError("pipeline --scene needs --reference LABELS.tif")
            with progress_bar(not quiet, "pipeline") as cb:
                s = run_scene_pipeline(args.scene, args.reference, args.out, _floats(args.reference_nodata),
                                       args.patch_size,
                                       args.test_fraction if args.test_fraction is not None else 0.3, args.seed,
                                       _class_names(args.class_names), args.stride, balance, train,
                                       progress=cb, select=select)
            print(f"scene pipeline: {s['regions']['train']} training / {s['regions']['test']} test regions, "
                  f"{s['n_train_samples']} training samples -> {s['balance']['total_after']} balanced; "
                  f"model {s['training']['model']}; {s['seconds']:.0f} s")
        elif args.samples:
            with progress_bar(not quiet, "pipeline") as cb:
                s = run_patch_pipeline(args.samples, args.out,
                                   args.test_fraction if args.test_fraction is not None else 0.2, args.seed,
                                       balance, train, progress=cb, select=select)
            print(f"patch pipeline: {s['n_train']} training / {s['n_test']} held-out samples; balanced "
                  f"{s['balance']['total_before']} -> {s['balance']['total_after']}; "
                  f"model {s['training']['model']}; {s['seconds']:.0f} s")
        else:
            raise GeomlError("pipeline needs SAMPLES_DIR, or --scene SCENE... --reference LABELS.tif")
        print(f"model selection ({s['selection']['folds']}; {args.out}/selection/cv.png):")
        for row in s["selection"]["candidates"]:
            mark = " <- chosen" if row["model"] == s["selection"]["chosen"] else ""
            print(f"  {row['model']:9s} overall accuracy {row['mean_overall_accuracy']:.3f} ± "
                  f"{row['std_overall_accuracy']:.3f}{mark}")
        print(f"QC on held-out data ({args.out}/qc/summary.json):")
        print(format_qc(s["qc"]))
    return 0


def run_catalog(args, quiet: bool) -> None:
    """``geoml-hub catalog``: check the roots and ``--out`` first, then build and swap in."""
    roots = {}
    for item in args.data_root:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ParameterError(f"--data-root expects NAME=DIR, got {item!r}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name.strip()):
            raise ParameterError(f"--data-root {item}: the name must be a plain word (letters, digits, _ -)")
        if not Path(path.strip()).is_dir():
            raise ParameterError(f"--data-root {item}: no such directory {path.strip()}")
        roots[name.strip()] = Path(path.strip())
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "catalog.json").is_file():
        raise ParameterError(f"--out {out}: a non-empty directory that is not a STAC catalogue (no catalog.json); "
                             "give a new or empty folder")
    cache = Cache(out.parent / f"{out.name}.cache.json")
    with progress_bar(not quiet, "catalog") as cb:
        catalog = build_catalog(roots, file_hrefs(out), cache, title=args.title, progress=cb)
        save_catalog(catalog, out)
    cache.save()
    items = sum(1 for _ in catalog.get_items(recursive=True))
    trees = sum(1 for c in catalog.get_all_collections() if c.extra_fields.get("geoml:kind") == "sample-tree")
    print(f"wrote {out}/catalog.json: {len(roots)} data root(s), {items} raster item(s), {trees} sample tree(s); "
          f"{cache.reads} file(s) read, the others unchanged since the last run")


def run_map(args) -> int:
    """``geoml-hub map serve``."""
    # imported here: the map's extras (rio-tiler, werkzeug) are not in every image
    from .map.app import MapSettings
    from .map.server import serve
    from .wps.settings import parse_roots

    host = args.host if args.host not in ("0.0.0.0", "::") else "127.0.0.1"
    settings = MapSettings(data_roots=parse_roots(",".join(args.data_root or [])), wps_url=args.wps_url,
                           wps_public_url=args.wps_public_url or "", url=args.url or f"http://{host}:{args.port}",
                           auth=args.auth, cache_dir=args.cache_dir, revalidate_seconds=args.revalidate_seconds,
                           basemap_url=args.basemap_url,
                           basemap_attribution=args.basemap_attribution)
    return serve(settings, args.host, args.port, server=args.server, workers=args.workers, ready_file=args.ready_file)


def run_wps(args) -> int:
    """``geoml-hub wps serve`` and ``geoml-hub wps describe``."""
    if args.wps_command == "describe":
        # imported here (and serve below): PyWPS is in the WPS's extras, not in every image
        from .processes import load
        from .wps.ogc.describe import render_markdown

        sys.stdout.write(render_markdown(load()))
        return 0
    from .wps.http.serve import serve  # imported here: PyWPS is in the WPS's extras (see above)
    from .wps.settings import load_settings

    roots = None
    if args.data_root:
        roots = ",".join(args.data_root)
    settings = load_settings(args.config, state_dir=args.state_dir, data_roots=roots, database=args.database,
                             parallelprocesses=args.parallel, maxprocesses=args.max_queued,
                             retention_hours=args.retention_hours, job_retries=args.job_retries, url=args.url,
                             auth=args.auth,
                             shared_results=args.shared_results)
    if not args.url and not _config_sets_url(args.config):
        host = args.host if args.host not in ("0.0.0.0", "::") else "127.0.0.1"
        settings.url = f"http://{host}:{args.port}"
    return serve(settings, args.host, args.port, server=args.server, workers=args.workers, ready_file=args.ready_file)


def _config_sets_url(config: Optional[str]) -> bool:
    if not config:
        return False
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(config)
    return cfg.has_option("geoml", "url")


def _raster_problem(exc: BaseException) -> str:
    """One line for a rasterio error: GDAL's messages (down the exception's causes) name the file
    and band it could not read (``corrupt.tif, band 1: IReadBlock failed ...``)."""
    seen = exc
    while seen is not None:
        m = re.match(r"(.+?), band (\d+): ", str(seen))
        if m:
            return f"{m.group(1)}: cannot read band {m.group(2)} (the file is truncated or corrupt)"
        seen = seen.__cause__ or seen.__context__
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"a raster could not be read or written ({text})"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``geoml-hub`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except GeomlError as exc:
        print(f"geoml-hub: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from rasterio.errors import RasterioError

        if isinstance(exc, RasterioError):  # a truncated or corrupt raster (RasterioIOError is an OSError too)
            print(f"geoml-hub: error: {_raster_problem(exc)}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError):  # FileExistsError, NotADirectoryError, PermissionError, a full disk, ...
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"geoml-hub: error: {where}{exc.strerror or exc}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        print("geoml-hub: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
