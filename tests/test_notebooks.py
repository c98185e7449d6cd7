"""The example notebooks of notebooks/.

- Their sources are the jupytext-paired ``notebooks/NN_*.py`` files (percent format); the
  committed ``.ipynb`` files are what ``jupytext --sync`` makes of them (checked byte for
  byte on a copy), valid per ``nbformat.validate``, and stored without outputs or execution
  counts.
- Each one runs top to bottom in a real Jupyter kernel of this interpreter (nbclient),
  notebooks 01 and 02 against a real ``geoml-hub wps serve`` on loopback (the
  module-scoped server below), configured only through the environment a geoml-hub user
  server has (``GEOML_WPS_URL``; ``GEOML_DATA`` in place of ``~/data``), with
  ``GEOML_DEMO_EPOCHS=3``. The assertions read the executed notebooks' outputs and check
  them against what the server (or the library) wrote: printed accuracies against the
  jobs' ``summary.json``, inline figures against the jobs' PNG files.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from wps_server import DATA, WpsServer

REPO = Path(__file__).resolve().parents[1]
NB_DIR = REPO / "notebooks"
NOTEBOOKS = ("01_balance_train_evaluate.ipynb", "02_classify_validate_compare.ipynb", "03_library_in_kernel.ipynb")
EPOCHS = 3
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QC_LINE = re.compile(r"overall accuracy (\d\.\d{3})\s+kappa\s+(-?\d\.\d{3})\s+n (\d+)")
EUROSAT_CLASSES = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake")

nbformat = pytest.importorskip("nbformat")


# -- the files as committed -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_in_sync_with_its_py_source(tmp_path, name):
    """``jupytext --sync`` on the paired .py source leaves the committed .ipynb as it is."""
    source = (NB_DIR / name).with_suffix(".py")
    assert source.is_file(), f"{source} missing: the .py file is the notebook's source"
    for path in (source, NB_DIR / name):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    out = subprocess.run([sys.executable, "-m", "jupytext", "--to", "ipynb", "--update", str(tmp_path / source.name)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / name).read_bytes() == (NB_DIR / name).read_bytes(), \
        f"{NB_DIR / name} is not in sync with {source.name}: run jupytext --sync notebooks/{source.name}"
    nb = nbformat.read(NB_DIR / name, as_version=nbformat.NO_CONVERT)
    assert nb.metadata.jupytext.formats == "ipynb,py:percent"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_valid_and_has_no_outputs(name):
    nb = nbformat.read(NB_DIR / name, as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) >= (4, 5)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [], f"{name} cell {cell.id} has outputs"
        assert cell.execution_count is None, f"{name} cell {cell.id} has an execution count"
    ids = [c.id for c in nb.cells]
    assert len(set(ids)) == len(ids)
    # the first cell says what the notebook does and what it needs; the epochs come from the environment
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "What it needs" in first.source and "GEOML_DEMO_EPOCHS" in first.source
    assert 'os.environ.get("GEOML_DEMO_EPOCHS"' in "".join(c.source for c in code)
    # committed without outputs also in the raw JSON (no stray keys an editor might add)
    raw = json.loads((NB_DIR / name).read_text(encoding="utf-8"))
    for cell in raw["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


# -- running them ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """A kernelspec that starts ipykernel with this interpreter, found through JUPYTER_PATH."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    root = tmp_path_factory.mktemp("jupyter")
    name = "geoml-hub-test"
    spec = root / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"geoml-hub tests ({sys.executable})", "language": "python"}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(root) + os.pathsep + os.environ.get("JUPYTER_PATH", ""))
        yield name


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    assert DATA.is_dir(), f"real data missing: {DATA}"
    srv = WpsServer(tmp_path_factory.mktemp("nb-wps") / "state", parallel=2)
    srv.start()
    yield srv
    srv.stop()


def run_notebook(name: str, kernel: str, cwd: Path, env: dict, server=None):
    """Execute a committed notebook in ``cwd`` with ``env`` added to the kernel's environment."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(NB_DIR / name, as_version=4)
    env = {"GEOML_DEMO_EPOCHS": str(EPOCHS), "GEOML_DATA": str(DATA.resolve()),
           "XDG_CACHE_HOME": str(cwd / "cache"), "OMP_NUM_THREADS": "1", **env}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.delenv("JUPYTERHUB_API_TOKEN", raising=False)
        client = NotebookClient(nb, kernel_name=kernel, timeout=300, startup_timeout=120,
                                resources={"metadata": {"path": str(cwd)}})
        try:
            client.execute()
        except CellExecutionError as exc:
            log = server.log_text()[-3000:] if server is not None else ""
            raise AssertionError(f"{name} failed:\n{str(exc)[-5000:]}\n--- server log ---\n{log}") from None
    nbformat.write(nb, cwd / name)  # kept in the test's directory for a look after a failure
    return nb


def stdout(nb) -> str:
    return "".join(o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream" and o.name == "stdout")


def pngs(cell):
    """The inline PNG images of a cell, as bytes."""
    out = []
    for o in cell.outputs:
        data = o.get("data", {})
        if "image/png" in data:
            png = base64.b64decode(data["image/png"])
            assert png.startswith(PNG_MAGIC)
            out.append(png)
    return out


def cell_with(nb, text):
    cells = [c for c in nb.cells if c.cell_type == "code" and text in c.source]
    assert len(cells) == 1, f"{len(cells)} code cells contain {text!r}"
    return cells[0]


def no_errors(nb):
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")


def job_file(server, job_id: str, name: str) -> Path:
    path = server.state_dir / "outputs" / job_id / name
    assert path.is_file(), f"{path} missing"
    return path


def check_qc(text: str, summary: dict) -> None:
    """The format_qc block in ``text`` agrees with the job's summary.json."""
    m = QC_LINE.search(text)
    assert m, text[-2000:]
    assert float(m.group(1)) == round(summary["overall_accuracy"], 3)
    assert float(m.group(2)) == round(summary["kappa"], 3)
    assert int(m.group(3)) == summary["n"]
    assert "PPV (user's)" in text and "TPR (producer's)" in text
    for cls in summary["classes"]:
        assert re.search(rf"^{re.escape(cls)}\s+(\d\.\d{{3}}|n/a)\s", text, re.M), cls


@pytest.mark.slow
def test_01_balance_train_evaluate(server, kernel, tmp_path):
    nb = run_notebook(NOTEBOOKS[0], kernel, tmp_path, {"GEOML_WPS_URL": server.url}, server)
    no_errors(nb)
    out = stdout(nb)
    assert f"WPS endpoint: {server.wps_url}" in out and f"epochs: {EPOCHS}" in out

    # balancing: the numbers printed are the job's summary; the cluster plot is the job's PNG
    bal_job = re.search(r"balance_samples job (\S+)", out).group(1)
    bal = json.loads(job_file(server, bal_job, "summary.json").read_text())
    assert f"kept {bal['total_after']} of {bal['total_before']} samples in 10 classes" in out
    assert bal["total_after"] < bal["total_before"] == 269  # step=2 thins some clusters
    assert pngs(cell_with(nb, "bal.clusters_plot")) == [job_file(server, bal_job, "clusters.png").read_bytes()]

    # training: the curves shown are the job's curves PNG
    m = re.search(r"train_model job (\S+): (\d+) epochs on (\w+)", out)
    assert m and 1 <= int(m.group(2)) <= EPOCHS and m.group(3) in ("cpu", "cuda")
    assert pngs(cell_with(nb, "fit.curves")) == [job_file(server, m.group(1), "model.curves.png").read_bytes()]

    # QC: the summary printed is the evaluate_model job's summary.json on the server
    m = re.search(r"evaluate_model job (\S+): QC on (\d+) patches of data/eurosat_ms\n", out)
    assert m, out[-3000:]
    summary = json.loads(job_file(server, m.group(1), "summary.json").read_text())
    assert int(m.group(2)) == summary["n"] == 269
    check_qc(out[m.end():], summary)
    assert sorted(summary["classes"]) == sorted(EUROSAT_CLASSES)
    assert pngs(cell_with(nb, "qc.heatmap")) == [job_file(server, m.group(1), "confusion_matrix.png").read_bytes()]
    assert f"PyCM: overall accuracy {summary['overall_accuracy']:.3f}, kappa {summary['kappa']:.3f}" in out
    assert sum(len(pngs(c)) for c in nb.cells if c.cell_type == "code") == 3


@pytest.mark.slow
def test_02_classify_validate_compare(server, kernel, tmp_path):
    nb = run_notebook(NOTEBOOKS[1], kernel, tmp_path, {"GEOML_WPS_URL": server.url}, server)
    no_errors(nb)
    out = stdout(nb)
    versions = ("all bands", "reflectance")

    m = re.search(r"extract_samples job \S+: (\d+) pixel samples from (\d+) training regions; "
                  r"(\d+) regions held out", out)
    assert m and int(m.group(3)) == 14, out[:2000]  # the 14 held-out Chiapas regions (seed 0)

    # two versions trained, each with its curves shown, and the bands asked for
    trained = dict(re.findall(r"^(.+?): train_model job (\S+), \d+ epochs", out, re.M))
    assert set(trained) == set(versions)
    for version, job in trained.items():
        assert job_file(server, job, "model.curves.png").read_bytes() in pngs(cell_with(nb, "fit.curves"))
    assert len(pngs(cell_with(nb, "fit.curves"))) == 2
    assert len(pngs(cell_with(nb, "rasterio.open(cls.classification)"))) == 1  # the two classified maps

    # each validation printed is that job's summary.json; n = the held-out labelled pixels
    blocks = re.split(r"^== ", out, flags=re.M)[1:]
    validated = {}
    for block in blocks:
        m = re.match(r"(.+?): validate_classification job (\S+)\n", block)
        if not m:
            continue
        summary = json.loads(job_file(server, m.group(2), "summary.json").read_text())
        check_qc(block, summary)
        assert summary["n"] == 256
        validated[m.group(1)] = (m.group(2), summary)
    assert set(validated) == set(versions)
    heatmaps = pngs(cell_with(nb, "qc.heatmap"))
    assert heatmaps == [job_file(server, validated[v][0], "confusion_matrix.png").read_bytes() for v in versions]

    # the comparison: its table, and a better version consistent with the two validations
    m = re.search(r"compare_classifications job (\S+)", out)
    comparison = json.loads(job_file(server, m.group(1), "summary.json").read_text())
    a, b = (validated[v][1] for v in versions)
    key = lambda s: (s["overall_accuracy"], s["kappa"])  # noqa: E731
    expected = versions[0] if key(a) > key(b) else versions[1] if key(b) > key(a) else "tie"
    printed = re.search(r"^better version: (.+?) \(", out, re.M).group(1)
    assert printed == expected == (comparison["better"] or "tie")
    row = re.search(r"^overall_accuracy\s+(\d\.\d{3})\s+(\d\.\d{3})$", out, re.M)
    assert row and (float(row.group(1)), float(row.group(2))) == (round(a["overall_accuracy"], 3),
                                                                  round(b["overall_accuracy"], 3))
    assert re.search(r"^PyCM Compare verdict: (all bands|reflectance|none)$", out, re.M)
    assert sum(len(pngs(c)) for c in nb.cells if c.cell_type == "code") == 6


@pytest.mark.slow
def test_03_library_in_kernel(kernel, tmp_path):
    import torch

    nb = run_notebook(NOTEBOOKS[2], kernel, tmp_path, {})
    no_errors(nb)
    out = stdout(nb)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert re.search(rf"^device: {device}$", out, re.M), out[:1000]
    assert f"data: {DATA.resolve()}; epochs: {EPOCHS}" in out

    run = tmp_path / "runs" / "03_library"  # written under the notebook's working directory
    assert (run / "model" / "model.pt").is_file() and (run / "balance" / "manifest.csv").is_file()
    assert "269 samples, 10 classes, 13 bands, patches 64 x 64" in out
    assert "training: 215 patches; held-out test: 54 patches" in out
    m = re.search(rf"^(\d+) epochs on {device} ", out, re.M)
    assert m and 1 <= int(m.group(1)) <= EPOCHS

    summary = json.loads((run / "qc" / "summary.json").read_text())
    assert summary["n"] == 54
    check_qc(out[out.index("QC on 54 held-out patches:"):], summary)
    assert pngs(cell_with(nb, "files[\"plot\"]")) == [(run / "balance" / "clusters.png").read_bytes()]
    assert pngs(cell_with(nb, "res.curves_path")) == [(run / "model" / "model.curves.png").read_bytes()]
    assert pngs(cell_with(nb, "confusion_matrix.png")) == [(run / "qc" / "confusion_matrix.png").read_bytes()]
