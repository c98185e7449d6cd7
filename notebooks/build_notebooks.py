"""Write the example notebooks of notebooks/ with nbformat (the source of truth is this file).

Each notebook is built cell by cell, validated with ``nbformat.validate`` and written without
outputs or execution counts, with stable cell ids, so that running this script again gives
the same bytes (``tests/test_notebooks.py`` checks that the committed notebooks are current).

    python notebooks/build_notebooks.py            # rewrite notebooks/*.ipynb
    python notebooks/build_notebooks.py --out DIR  # write them into DIR instead
    python notebooks/build_notebooks.py --check    # exit 1 if a committed notebook is stale

The notebooks:

- ``01_balance_train_evaluate.ipynb``: balance -> train -> evaluate on ``data/eurosat_ms``
  through the WPS (``geoml_hub.client``);
- ``02_classify_validate_compare.ipynb``: the Landsat 7 Chiapas scene through the WPS:
  spatial split and extraction, balancing, two model versions, classification, validation
  on the held-out regions and the PyCM comparison of the versions;
- ``03_library_in_kernel.ipynb``: the same steps with the library in the kernel, no WPS.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
LANGUAGE_INFO = {"name": "python", "file_extension": ".py", "mimetype": "text/x-python",
                 "pygments_lexer": "ipython3", "codemirror_mode": {"name": "ipython", "version": 3},
                 "nbconvert_exporter": "python"}

# a cell: ("md" | "code", source)
Cells = List[Tuple[str, str]]


def _dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text).strip("\n")


# -- 01: balance -> train -> evaluate through the WPS ----------------------------------------------------------

NB01: Cells = [
    ("md", """
    # EuroSAT through the WPS: balance → train → evaluate

    This notebook runs the three steps of geoml-hub's patch workflow as OGC WPS jobs, with
    `geoml_hub.client` (every WPS process is a Python function):

    1. **balance** the training sample with the cluster-based algorithm of the ISDCT SB RAS
       geoportal, and look at the clusters;
    2. **train** a patch CNN on the balanced sample, and look at its training curves;
    3. **evaluate** the model with PyCM: overall accuracy, kappa, PPV and TPR per class, and
       the confusion-matrix heatmap.

    **What it needs**

    - a geoml-hub WPS service: in a geoml-hub user server `GEOML_WPS_URL` and
      `JUPYTERHUB_API_TOKEN` are already set; standalone, start one and point
      `GEOML_WPS_URL` at it:

          geoml-hub wps serve --data-root data=../shared/data
          export GEOML_WPS_URL=http://127.0.0.1:5000

    - the EuroSAT sample tree on the server, `data/eurosat_ms` (269 Sentinel-2 patches,
      13 bands, 64 × 64 pixels, 10 classes; the same folder is `~/data/eurosat_ms` in your
      notebook server);
    - `GEOML_DEMO_EPOCHS` (optional): training epochs, default 60 (the recommended setting
      of docs/training.md: one to two minutes of training on 2 CPU cores); a small value
      such as 3 makes a quick run.

    Run the cells top to bottom; nothing needs editing. Files the jobs write are downloaded
    into `~/.cache/geoml-hub/jobs/<job id>/`.
    """),
    ("code", """
    import os

    from IPython.display import Image, display

    from geoml_hub.cli import format_qc
    from geoml_hub.client import Client

    SAMPLES = "data/eurosat_ms"   # a dataset name on the server (~/data/eurosat_ms here)
    EPOCHS = int(os.environ.get("GEOML_DEMO_EPOCHS", "60"))

    hub = Client()   # GEOML_WPS_URL, JUPYTERHUB_API_TOKEN
    print("WPS endpoint:", hub.wps_url)
    print("processes:", ", ".join(hub.processes))
    print("epochs:", EPOCHS)
    """),
    ("md", """
    ## 1. Balance the training sample

    `balance_samples` is the balancing algorithm of the ISDCT SB RAS geoportal (Avramenko,
    Popova, Fedorov, ITAMS 2021): for every sample and band it takes the mean and standard
    deviation of the pixels, clusters these features with k-means (here per class), orders
    the clusters by size, keeps the small clusters (below a threshold) whole, and takes every
    `step`-th sample of the larger ones. Rare spectral variants survive and
    over-represented ones are thinned. geoml-hub adds a floor: no class is thinned below
    the size of the rarest class, so the max/min class ratio never grows.

    This EuroSAT subset is nearly balanced already (20 to 30 patches per class). With the
    default target (the median class size), integer steps would thin no class, so we ask
    for `step=2` to see the algorithm at work. On a strongly unbalanced sample (notebook 02)
    the default does the job.
    """),
    ("code", """
    bal = hub.balance_samples(samples=SAMPLES, step=2, seed=0)
    print(f"balance_samples job {bal.job_id}")
    print(f"kept {bal.samples_after} of {bal.samples_before} samples in {bal.n_classes} classes; "
          f"max/min class ratio {bal.ratio_before:.2f} -> {bal.ratio_after:.2f}")
    for name, c in bal.summary["classes"].items():
        print(f"  {name:<21} {c['before']:>3} -> {c['after']:>3}   "
              f"{len(c['clusters'])} clusters, threshold {c['threshold']}, step {c['step']}")
    """),
    ("md", """
    The cluster plot shows every sample in the first two principal components of its
    features, one panel per class, coloured by cluster. Filled markers are kept samples,
    grey crosses are thinned-out ones.
    """),
    ("code", """
    display(Image(filename=str(bal.clusters_plot)))
    """),
    ("md", """
    ## 2. Train on the balanced sample

    `train_model` trains a small patch CNN with the recommended settings of docs/training.md.
    The input is the balanced manifest, chained by its dataset name
    (`jobs/<job id>/manifest.csv`), so nothing goes through the notebook. Training holds out
    15 % of each class for validation and keeps the weights of the epoch with the lowest
    validation loss (early stopping).

    The **training curves** show loss and overall accuracy per epoch on the training and
    validation samples. Training loss that keeps falling while validation loss rises means
    overfitting. Curves that are still improving at the last epoch mean that more epochs
    would help (`GEOML_DEMO_EPOCHS`).
    """),
    ("code", """
    fit = hub.train_model(samples=bal.dataset("manifest"), epochs=EPOCHS, seed=0)
    print(f"train_model job {fit.job_id}: {fit.epochs_run} epochs on {fit.device} in {fit.seconds:.0f} s, "
          f"best epoch {fit.best_epoch}")
    print(f"validation overall accuracy {fit.val_overall_accuracy:.3f} "
          f"({fit.n_val} validation samples; trained on {fit.n_train})")
    display(Image(filename=str(fit.curves)))
    """),
    ("md", """
    ## 3. Quality control with PyCM

    `evaluate_model` predicts every patch of a sample tree and compares the predictions
    with the patches' classes in a PyCM confusion matrix. This is the quality-control step
    of the geoportal paper. The summary shows:

    - **overall accuracy**: the share of correctly classified patches;
    - **kappa** (Cohen's): agreement beyond chance, 0 for chance and 1 for perfect;
    - **PPV** (user's accuracy): of the patches predicted as a class, the share that
      really are that class;
    - **TPR** (producer's accuracy): of the patches of a class, the share found.

    We evaluate on the whole tree. That tree includes the patches the model was trained
    on, so these numbers are **optimistic**. The validation accuracy above is the honest
    number from this run. Notebook 03 holds out 20 % of the patches before training, and
    notebook 02 holds out whole regions of a scene.
    """),
    ("code", """
    qc = hub.evaluate_model(model=fit.dataset("model"), samples=SAMPLES)
    print(f"evaluate_model job {qc.job_id}: QC on {qc.n} patches of {SAMPLES}")
    print(format_qc(qc.summary))
    """),
    ("md", """
    The confusion-matrix heatmap has reference classes in rows and predicted classes in
    columns. Off-diagonal cells show which classes are confused. `qc.pycm` is the PyCM
    `ConfusionMatrix` itself, with every statistic PyCM computes, and `qc.report` is
    PyCM's HTML report.
    """),
    ("code", """
    display(Image(filename=str(qc.heatmap)))
    cm = qc.pycm
    print(f"PyCM: overall accuracy {cm.Overall_ACC:.3f}, kappa {cm.Kappa:.3f} "
          f"({cm.SOA1} agreement after Landis and Koch)")
    print("PyCM HTML report:", qc.report)
    """),
]


# -- 02: the Chiapas scene: two versions, validated and compared ----------------------------------------------

NB02: Cells = [
    ("md", """
    # Landsat 7, Chiapas: classify, validate and compare two method versions

    This notebook runs the scene workflow through the WPS with `geoml_hub.client` and ends
    the way the ISDCT SB RAS geoportal paper uses PyCM, by **comparing two versions of a
    method** on the same reference:

    1. hold out 30 % of the labelled regions (whole regions) and **extract** pixel samples
       from the rest;
    2. **balance** the samples (cluster-based, as in the geoportal);
    3. **train two model versions**: *A* on all 8 bands of the stack, *B* on the six
       reflectance bands only (ETM+ 1, 2, 3, 4, 5, 7, without the thermal band and the
       Fmask band);
    4. **classify** the scene with each;
    5. **validate** each classification on the held-out regions (PyCM);
    6. **compare** the two (`compare_classifications`) and name the better version.

    **What it needs**

    - a geoml-hub WPS service (`GEOML_WPS_URL`, and `JUPYTERHUB_API_TOKEN` in a geoml-hub
      user server; standalone: `geoml-hub wps serve --data-root data=../shared/data` and
      `export GEOML_WPS_URL=http://127.0.0.1:5000`);
    - the Chiapas scene and its label raster on the server, `data/landsat7_chiapas/`
      (`~/data/landsat7_chiapas/` in your notebook server): a 250 × 250-pixel Landsat 7
      ETM+ stack of 18 Nov 1999 and 718 labelled pixels in 5 classes;
    - `GEOML_DEMO_EPOCHS` (optional): training epochs of each version, default 60 (the
      recommended setting); a small value such as 3 makes a quick run.

    Both versions train, classify and validate **at the same time**: the calls use
    `wait=False` and return job handles, and the server runs two jobs in parallel.
    Plotting the maps needs matplotlib and rasterio, which come with geoml-hub.
    """),
    ("code", """
    import io
    import os

    import matplotlib.pyplot as plt
    import numpy as np
    import rasterio
    from IPython.display import Image, display
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from geoml_hub.classification import class_names_from_raster
    from geoml_hub.cli import format_qc
    from geoml_hub.client import Client

    SCENE = "data/landsat7_chiapas/LE70220491999322EDC01_stack.gtif"
    LABELS = "data/landsat7_chiapas/training_data.gtif"
    CLASS_NAMES = "1=forest,2=water,3=herbaceous,4=barren,5=urban"
    EPOCHS = int(os.environ.get("GEOML_DEMO_EPOCHS", "60"))
    VERSIONS = {"all bands": None, "reflectance": "1,2,3,4,5,6"}   # name -> train_model bands (None: all)

    hub = Client()
    print("WPS endpoint:", hub.wps_url)
    print("epochs:", EPOCHS)


    def show_png(fig):
        \"\"\"Show a matplotlib figure as an inline PNG (whatever the backend) and close it.\"\"\"
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        display(Image(data=buf.getvalue()))
    """),
    ("md", """
    ## 1. Spatial split and training samples

    With `test_fraction=0.3`, `extract_samples` first splits the label raster by **whole
    regions** (connected groups of same-class pixels), as iota2 does, so no test pixel
    touches a training pixel. Pixels that touch are nearly identical, and a pixel-wise
    random split would overstate the accuracy. The samples come from the training regions
    only, and the held-out labels come back as `reference_test`.
    """),
    ("code", """
    ext = hub.extract_samples(scene=SCENE, reference=LABELS, test_fraction=0.3, class_names=CLASS_NAMES, seed=0)
    print(f"extract_samples job {ext.job_id}: {ext.sample_count} pixel samples from {ext.n_regions} training "
          f"regions; {ext.test_regions} regions held out for testing")
    print("samples per class:", ext.class_counts)
    print("held-out reference:", ext.reference_test)
    """),
    ("md", """
    ## 2. Balance

    Forest dominates the labels and water is rare. The geoportal's cluster-based balancing
    thins the large classes cluster by cluster, towards the median class size.
    """),
    ("code", """
    bal = hub.balance_samples(samples=ext.samples, seed=0)
    print(f"balance_samples job {bal.job_id}: kept {bal.samples_after} of {bal.samples_before} samples; "
          f"max/min class ratio {bal.ratio_before:.1f} -> {bal.ratio_after:.1f}")
    display(Image(filename=str(bal.clusters_plot)))
    """),
    ("md", """
    ## 3. Two model versions

    Both versions train on the same balanced manifest with the same settings and seed. Only
    the input bands differ. `bands` selects bands of the samples (1-based). The model file
    records them, so `classify_scene` reads the same bands from the scene without a band map.
    """),
    ("code", """
    jobs = {name: hub.train_model(samples=bal.dataset("manifest"), epochs=EPOCHS, bands=bands, seed=0, wait=False)
            for name, bands in VERSIONS.items()}
    fits = {name: job.wait() for name, job in jobs.items()}
    for name, fit in fits.items():
        print(f"{name}: train_model job {fit.job_id}, {fit.epochs_run} epochs on {fit.device}, "
              f"validation overall accuracy {fit.val_overall_accuracy:.3f}")
    for name, fit in fits.items():
        print(name)
        display(Image(filename=str(fit.curves)))
    """),
    ("md", """
    ## 4. Classify the scene with each version

    A pixel model classifies every pixel of the scene. The result is a `uint8` GeoTIFF on
    the scene's grid, with a colour table and the class names in its `CLASS_NAMES` tag.
    """),
    ("code", """
    jobs = {name: hub.classify_scene(model=fit.dataset("model"), scene=SCENE, wait=False)
            for name, fit in fits.items()}
    maps = {name: job.wait() for name, job in jobs.items()}
    for name, cls in maps.items():
        print(f"{name}: classify_scene job {cls.job_id}, pixels per class {cls.class_counts}")

    fig, axes = plt.subplots(1, len(maps), figsize=(5 * len(maps), 4.6))
    for ax, (name, cls) in zip(np.atleast_1d(axes), maps.items()):
        with rasterio.open(cls.classification) as src:
            codes = src.read(1)
            colors = src.colormap(1)
        names = class_names_from_raster(cls.classification)
        shown = sorted(names)
        cmap = ListedColormap([np.array(colors[c][:3]) / 255 for c in shown])
        index = np.searchsorted(shown, codes)
        ax.imshow(np.ma.masked_array(index, ~np.isin(codes, shown)), cmap=cmap, vmin=-0.5,
                  vmax=len(shown) - 0.5, interpolation="nearest")
        ax.set_title(name)
        ax.set_axis_off()
    handles = [Patch(color=np.array(colors[c][:3]) / 255, label=names[c]) for c in shown]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    show_png(fig)
    """),
    ("md", """
    ## 5. Validate each version on the held-out regions

    `validate_classification` compares a classification with the held-out labels pixel by
    pixel, in a PyCM confusion matrix (the geoportal's quality control). PPV is the user's
    accuracy and TPR the producer's accuracy of each class.
    """),
    ("code", """
    jobs = {name: hub.validate_classification(classification=cls.dataset("classification"),
                                              reference=ext.reference_test, wait=False)
            for name, cls in maps.items()}
    checks = {name: job.wait() for name, job in jobs.items()}
    for name, qc in checks.items():
        print(f"== {name}: validate_classification job {qc.job_id}")
        print(format_qc(qc.summary))
        print()
    """),
    ("code", """
    for name, qc in checks.items():
        print(name)
        display(Image(filename=str(qc.heatmap)))
    """),
    ("md", """
    ## 6. Compare the two versions

    This is how the geoportal paper uses PyCM: `compare_classifications` validates both
    versions against the same reference and builds a side-by-side table of overall
    accuracy, kappa, macro PPV, and PPV and TPR per class. It names the **better** version
    by the higher overall accuracy, with ties broken by kappa. It also reports PyCM's own
    `Compare` verdict, which weighs class-based and overall scores. The two can disagree,
    for example when one version is more accurate overall but misses a rare class
    entirely.
    """),
    ("code", """
    name_a, name_b = list(VERSIONS)
    cmp = hub.compare_classifications(classification_a=maps[name_a].dataset("classification"),
                                      classification_b=maps[name_b].dataset("classification"),
                                      reference=ext.reference_test, name_a=name_a, name_b=name_b)
    print(f"compare_classifications job {cmp.job_id}")


    def fmt(value):
        return "   n/a" if value is None else f"{value:6.3f}"


    print(f"{'statistic':<18} {name_a:>12} {name_b:>12}")
    for stat, row in cmp.summary["table"].items():
        print(f"{stat:<18} {fmt(row[name_a]):>12} {fmt(row[name_b]):>12}")
    print()
    print(f"better version: {cmp.better} ({cmp.summary['rule']})")
    print(f"PyCM Compare verdict: {cmp.pycm_best}")
    """),
    ("md", """
    ### How to read it

    The test set is small: 256 pixels in 14 regions, with few water and urban pixels. A
    difference of a few hundredths in overall accuracy can come from the random start of
    training alone. Before you trust a verdict, repeat both versions with a few `seed`
    values. On a real project, give `compare_classifications` your own versions: another
    band set, patch size, balancing setting, or number of epochs. `cmp.report_a` and
    `cmp.report_b` are PyCM's full HTML reports.
    """),
]


# -- 03: the library in the kernel, no WPS ------------------------------------------------------------------

NB03: Cells = [
    ("md", """
    # The library in the kernel: balance → train → evaluate without the WPS

    Every WPS process is a function of the `geoml_hub` library, and the notebook kernel can
    call those functions directly. The data are read from disk and PyTorch runs in this
    kernel, on the GPU when the notebook server has one. This notebook:

    1. picks the device with `geoml_hub.models.resolve_device("auto")`;
    2. opens the EuroSAT sample tree and holds out 20 % of each class for testing;
    3. balances the rest (the ISDCT geoportal's cluster-based algorithm) and trains a patch
       CNN on it;
    4. evaluates the model with PyCM on the held-out patches.

    **What it needs**

    - geoml-hub installed in the kernel (it is, in a geoml-hub user server);
    - the shared data at `~/data` (a geoml-hub user server mounts it there), or the folder
      named by `GEOML_DATA` (e.g. `GEOML_DATA=../shared/data` beside a checkout);
    - `GEOML_DEMO_EPOCHS` (optional): training epochs, default 60 (the recommended
      setting: one to two minutes of training on 2 CPU cores); a small value such as 3
      makes a quick run.

    It writes into `runs/03_library/` under the notebook's working directory.
    """),
    ("code", """
    import os
    from pathlib import Path

    import torch
    from IPython.display import Image, display
    from tqdm.auto import tqdm

    from geoml_hub.balancing import balance_samples
    from geoml_hub.cli import format_qc
    from geoml_hub.models import resolve_device
    from geoml_hub.samples import open_tree, write_manifest
    from geoml_hub.training import stratified_split, train_model
    from geoml_hub.validation import evaluate_model

    DATA = Path(os.environ.get("GEOML_DATA", "~/data")).expanduser()
    EPOCHS = int(os.environ.get("GEOML_DEMO_EPOCHS", "60"))
    OUT = Path("runs") / "03_library"
    OUT.mkdir(parents=True, exist_ok=True)

    DEVICE = resolve_device("auto")   # "cuda" when PyTorch sees a GPU, else "cpu"
    print(f"device: {DEVICE}")
    print(f"PyTorch {torch.__version__}" + (f", GPU {torch.cuda.get_device_name(0)}" if DEVICE == "cuda" else ""))
    print(f"data: {DATA}; epochs: {EPOCHS}; output: {OUT.resolve()}")


    def progress_bar(desc):
        \"\"\"A tqdm bar and the progress(fraction, message) callback that drives it.\"\"\"
        bar = tqdm(total=100, desc=desc, bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}{postfix}]")

        def progress(fraction, message):
            bar.n = round(100 * fraction)
            bar.set_postfix_str(message[:60])

        return bar, progress
    """),
    ("md", """
    ## 1. Open the sample tree and hold out a test set

    `open_tree` reads only the file headers. A tree has one folder per class, and the class
    codes follow the sorted names (EuroSAT: AnnualCrop 0 … SeaLake 9). `stratified_split`
    holds out 20 % of every class, seeded, as `geoml-hub pipeline` does. The test patches
    are never balanced, trained on or used for early stopping.
    """),
    ("code", """
    tree = open_tree(DATA / "eurosat_ms")
    print(f"{len(tree.samples)} samples, {len(tree.classes)} classes, {tree.bands} bands, "
          f"patches {tree.patch_size[0]} x {tree.patch_size[1]}")
    train_idx, test_idx = stratified_split(tree.labels(), 0.2, seed=0)
    train_set, test_set = tree.subset(train_idx), tree.subset(test_idx)
    write_manifest(OUT / "test.csv", test_set)
    print(f"training: {len(train_set.samples)} patches; held-out test: {len(test_set.samples)} patches")
    """),
    ("md", """
    ## 2. Balance the training part

    `balance_samples` is the geoportal's algorithm: per-band mean and standard deviation of
    each patch, k-means per class, small clusters kept whole, every `step`-th patch of the
    large ones, and no class thinned below the rarest. `result.write` saves the manifest,
    a JSON summary and the cluster plot. This EuroSAT subset is nearly balanced, so the
    default (thin towards the median class size) may keep every patch. Pass `step=2` or a
    `target` to thin harder, and compare the plots.
    """),
    ("code", """
    bal = balance_samples(train_set, seed=0)
    files = bal.write(OUT / "balance")
    selected = bal.selected()
    print(f"kept {len(selected.samples)} of {len(train_set.samples)} training patches; "
          f"max/min class ratio {bal.summary['ratio_before']:.2f} -> {bal.summary['ratio_after']:.2f}")
    display(Image(filename=str(files["plot"])))
    """),
    ("md", """
    ## 3. Train

    `train_model` takes the selected samples and writes the model file, its history CSV
    and the training curves PNG. Keyword arguments override single settings of the
    recommended `TrainConfig`.
    """),
    ("code", """
    bar, progress = progress_bar("train_model")
    res = train_model(selected, OUT / "model" / "model.pt", epochs=EPOCHS, device=DEVICE, seed=0, progress=progress)
    bar.close()
    print(f"{len(res.history)} epochs on {res.device} in {res.seconds:.1f} s; best epoch {res.best_epoch}; "
          f"validation overall accuracy {res.val_overall_accuracy:.3f}")
    print("model file:", res.model_path)
    display(Image(filename=str(res.curves_path)))
    """),
    ("md", """
    ## 4. Evaluate on the held-out patches (PyCM)

    `evaluate_model` predicts the held-out patches and builds the PyCM confusion matrix. It
    writes the summary, PyCM's HTML report, the matrix CSV, the heatmap and the predictions.
    These numbers come from patches the model never saw.
    """),
    ("code", """
    qc = evaluate_model(res.model_path, test_set, OUT / "qc", device=DEVICE)
    print(f"QC on {qc['n']} held-out patches:")
    print(format_qc(qc))
    display(Image(filename=str(OUT / "qc" / "confusion_matrix.png")))
    """),
    ("md", """
    On a notebook server with a GPU, the same cells train on CUDA, because
    `resolve_device("auto")` picks it. For long runs, submit the work to the WPS instead
    (notebooks 01 and 02). The job then runs on the server and survives closing this
    notebook.
    """),
]

NOTEBOOKS: Dict[str, Cells] = {
    "01_balance_train_evaluate.ipynb": NB01,
    "02_classify_validate_compare.ipynb": NB02,
    "03_library_in_kernel.ipynb": NB03,
}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` (a key of :data:`NOTEBOOKS`), validated, without outputs."""
    stem = name.split("_", 1)[0]
    cells = []
    for i, (kind, source) in enumerate(NOTEBOOKS[name]):
        maker = new_markdown_cell if kind == "md" else new_code_cell
        cell = maker(_dedent(source))
        cell.id = f"nb{stem}-{i:02d}"   # stable ids: the same bytes on every build
        cells.append(cell)
    nb = new_notebook(cells=cells, metadata={"kernelspec": dict(KERNELSPEC), "language_info": dict(LANGUAGE_INFO)})
    nbformat.validate(nb)
    return nb


def render(name: str) -> str:
    """The file content of notebook ``name``."""
    text = nbformat.writes(build(name))
    return text if text.endswith("\n") else text + "\n"


def write_all(out_dir: Path) -> List[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in NOTEBOOKS:
        path = out_dir / name
        path.write_text(render(name), encoding="utf-8")
        paths.append(path)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write into (default: notebooks/)")
    parser.add_argument("--check", action="store_true", help="only check that the notebooks in --out are current")
    args = parser.parse_args(argv)
    if args.check:
        stale = [name for name in NOTEBOOKS
                 if not (args.out / name).is_file()
                 or (args.out / name).read_text(encoding="utf-8") != render(name)]
        for name in stale:
            print(f"{args.out / name}: stale; run python notebooks/build_notebooks.py", file=sys.stderr)
        return 1 if stale else 0
    for path in write_all(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
