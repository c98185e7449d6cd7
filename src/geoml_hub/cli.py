"""The ``geoml-hub`` command line.

Sub-commands: ``extract``, ``balance``, ``train``, ``evaluate``, ``classify``,
``validate``, ``compare`` and ``pipeline``. Long steps show a progress bar (on stderr).
Expected errors print one line, ``geoml-hub: error: ...``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import configparser
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

from tqdm import tqdm

from . import __version__, params
from .balancing import BalanceParams, balance_samples
from .classification import ClassifyParams, classify_scene
from .errors import GeomlError
from .extraction import extract_samples
from .pipeline import run_patch_pipeline, run_scene_pipeline
from .samples import load_samples
from .training import TrainConfig, train_model
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


def _add_train_options(p: argparse.ArgumentParser, skip=()) -> None:
    g = p.add_argument_group("training (defaults: the recommended settings, docs/training.md)")
    params.add_cli_options(g, TrainConfig, skip=skip)


def _add_balance_options(p: argparse.ArgumentParser, skip=()) -> None:
    params.add_cli_options(p.add_argument_group("balancing"), BalanceParams, skip=skip)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geoml-hub", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"geoml-hub {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    p.add_argument("model")
    p.add_argument("samples")
    p.add_argument("--out", required=True)
    params.add_cli_options(p, EvaluateParams)

    p = sub.add_parser("classify", help="classify a scene into a uint8 GeoTIFF")
    p.add_argument("model")
    p.add_argument("scene", nargs="+")
    p.add_argument("--out", required=True, help="classification GeoTIFF to write")
    params.add_cli_options(p, ClassifyParams)

    p = sub.add_parser("validate", help="PyCM QC of a classification on labelled reference pixels")
    p.add_argument("classification")
    p.add_argument("reference")
    p.add_argument("--out", required=True)
    p.add_argument("--reference-nodata", default="0", help="unlabelled value (default 0; 'none': file nodata)")
    p.add_argument("--ignore-crs-name", action="store_true")

    p = sub.add_parser("compare", help="compare two classifications against one reference")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--reference", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--names", default="A,B", help="names of the two versions (default A,B)")
    p.add_argument("--reference-nodata", default="0")
    p.add_argument("--ignore-crs-name", action="store_true")

    p = sub.add_parser("pipeline", help="balance -> train -> evaluate (tree) or extract -> ... -> validate (scene)")
    p.add_argument("samples", nargs="?", help="training-sample tree (patch pipeline)")
    p.add_argument("--scene", nargs="+", help="scene files (scene pipeline)")
    p.add_argument("--reference", help="label raster (scene pipeline)")
    p.add_argument("--reference-nodata", default="0")
    p.add_argument("--class-names", help="CODE=NAME,... for the scene's labels")
    p.add_argument("--patch-size", type=int, default=1, help="scene pipeline sample window (default 1: pixels)")
    p.add_argument("--stride", type=int)
    p.add_argument("--test-fraction", type=float, help="held-out share (default 0.2 patches, 0.3 scene regions)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the balancing and the training (default 0)")
    _add_balance_options(p, skip=("seed",))
    _add_train_options(p, skip=("seed",))

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
    p.add_argument("--state-dir", help="as given to geoml-hub up")

    p = sub.add_parser("wps", help="the OGC WPS server (docs/wps.md)")
    wsub = p.add_subparsers(dest="wps_command", required=True, metavar="WPS_COMMAND")
    w = wsub.add_parser("serve", help="serve the WPS processes (standalone: loopback, no authentication)")
    w.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    w.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    w.add_argument("--config", help="INI file: a [geoml] section plus optional PyWPS sections")
    w.add_argument("--state-dir", help="directory for the database, outputs and job directories")
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
    msub = p.add_subparsers(dest="map_command", required=True, metavar="MAP_COMMAND")
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
    return parser


def run(args) -> int:
    quiet = args.quiet
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
        print(f"trained on {res.n_train} samples ({res.n_val} validation) on {res.device} in {res.seconds:.0f} s; "
              f"best epoch {res.best_epoch}" + (f", validation overall accuracy {acc:.3f}" if acc is not None else ""))
        print(f"wrote {res.model_path}, {res.history_path}, {res.curves_path}")
    elif cmd == "evaluate":
        with progress_bar(not quiet, "evaluate") as cb:
            s = evaluate_model(args.model, args.samples, args.out, progress=cb, **params.cli_values(args, EvaluateParams))
        print(format_qc(s))
    elif cmd == "classify":
        with progress_bar(not quiet, "classify") as cb:
            res = classify_scene(args.model, args.scene, args.out, progress=cb, **params.cli_values(args, ClassifyParams))
        print(f"wrote {res.path} ({res.pixels} pixels, {res.nodata_pixels} nodata, stride {res.stride}): "
              + ", ".join(f"{k} {v}" for k, v in res.counts.items()))
    elif cmd == "validate":
        with progress_bar(not quiet, "validate") as cb:
            s = validate_classification(args.classification, args.reference, args.out, _floats(args.reference_nodata),
                                        ignore_crs_name=args.ignore_crs_name, progress=cb)
        print(format_qc(s))
    elif cmd == "compare":
        names = tuple(n.strip() for n in args.names.split(","))
        if len(names) != 2:
            raise GeomlError(f"--names takes two names separated by a comma, got {args.names!r}")
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
        train = params.cli_values(args, TrainConfig, skip=("seed",))
        balance = params.cli_values(args, BalanceParams, skip=("seed",))
        if args.scene:
            if not args.reference:
                raise GeomlError("pipeline --scene needs --reference LABELS.tif")
            with progress_bar(not quiet, "pipeline") as cb:
                s = run_scene_pipeline(args.scene, args.reference, args.out, _floats(args.reference_nodata),
                                       args.patch_size, args.test_fraction or 0.3, args.seed,
                                       _class_names(args.class_names), args.stride, balance, train,
                                       progress=cb)
            print(f"scene pipeline: {s['regions']['train']} training / {s['regions']['test']} test regions, "
                  f"{s['n_train_samples']} training samples -> {s['balance']['total_after']} balanced; "
                  f"{s['training']['epochs_run']} epochs; {s['seconds']:.0f} s")
        elif args.samples:
            with progress_bar(not quiet, "pipeline") as cb:
                s = run_patch_pipeline(args.samples, args.out, args.test_fraction or 0.2, args.seed,
                                       balance, train, progress=cb)
            print(f"patch pipeline: {s['n_train']} training / {s['n_test']} held-out samples; balanced "
                  f"{s['balance']['total_before']} -> {s['balance']['total_after']}; "
                  f"{s['training']['epochs_run']} epochs; {s['seconds']:.0f} s")
        else:
            raise GeomlError("pipeline needs SAMPLES_DIR, or --scene SCENE... --reference LABELS.tif")
        print(f"QC on held-out data ({args.out}/qc/summary.json):")
        print(format_qc(s["qc"]))
    return 0


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``geoml-hub`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except GeomlError as exc:
        print(f"geoml-hub: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"geoml-hub: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("geoml-hub: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
