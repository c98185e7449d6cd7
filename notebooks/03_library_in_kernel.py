# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The library in the kernel: balance → train → evaluate without the WPS
#
# Every WPS process is a function of the `geoml_hub` library, and the notebook kernel can
# call those functions directly. The data are read from disk and PyTorch runs in this
# kernel, on the GPU when the notebook server has one. This notebook:
#
# 1. picks the device with `geoml_hub.models.resolve_device("auto")`;
# 2. opens the EuroSAT sample tree and holds out 20 % of each class for testing;
# 3. balances the rest (the ISDCT geoportal's cluster-based algorithm) and trains a patch
#    CNN on it;
# 4. evaluates the model with PyCM on the held-out patches.
#
# **What it needs**
#
# - geoml-hub installed in the kernel (it is, in a geoml-hub user server);
# - the shared data at `~/data` (a geoml-hub user server mounts it there), or the folder
#   named by `GEOML_DATA` (e.g. `GEOML_DATA=../shared/data` beside a checkout);
# - `GEOML_DEMO_EPOCHS` (optional): training epochs, default 60 (the recommended
#   setting: one to two minutes of training on 2 CPU cores); a small value such as 3
#   makes a quick run.
#
# It writes into `runs/03_library/` under the notebook's working directory.

# %%
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
    """A tqdm bar and the progress(fraction, message) callback that drives it."""
    bar = tqdm(total=100, desc=desc, bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}{postfix}]")

    def progress(fraction, message):
        bar.n = round(100 * fraction)
        bar.set_postfix_str(message[:60])

    return bar, progress


# %% [markdown]
# ## 1. Open the sample tree and hold out a test set
#
# `open_tree` reads only the file headers. A tree has one folder per class, and the class
# codes follow the sorted names (EuroSAT: AnnualCrop 0 … SeaLake 9). `stratified_split`
# holds out 20 % of every class, seeded, as `geoml-hub pipeline` does. The test patches
# are never balanced, trained on or used for early stopping.

# %%
tree = open_tree(DATA / "eurosat_ms")
print(f"{len(tree.samples)} samples, {len(tree.classes)} classes, {tree.bands} bands, "
      f"patches {tree.patch_size[0]} x {tree.patch_size[1]}")
train_idx, test_idx = stratified_split(tree.labels(), 0.2, seed=0)
train_set, test_set = tree.subset(train_idx), tree.subset(test_idx)
write_manifest(OUT / "test.csv", test_set)
print(f"training: {len(train_set.samples)} patches; held-out test: {len(test_set.samples)} patches")

# %% [markdown]
# ## 2. Balance the training part
#
# `balance_samples` is the geoportal's algorithm: per-band mean and standard deviation of
# each patch, k-means per class, small clusters kept whole, every `step`-th patch of the
# large ones, and no class thinned below the rarest. `result.write` saves the manifest,
# a JSON summary and the cluster plot. This EuroSAT subset is nearly balanced, so the
# default (thin towards the median class size) may keep every patch. Pass `step=2` or a
# `target` to thin harder, and compare the plots.

# %%
bal = balance_samples(train_set, seed=0)
files = bal.write(OUT / "balance")
selected = bal.selected()
print(f"kept {len(selected.samples)} of {len(train_set.samples)} training patches; "
      f"max/min class ratio {bal.summary['ratio_before']:.2f} -> {bal.summary['ratio_after']:.2f}")
display(Image(filename=str(files["plot"])))

# %% [markdown]
# ## 3. Train
#
# `train_model` takes the selected samples and writes the model file, its history CSV
# and the training curves PNG. Keyword arguments override single settings of the
# recommended `TrainConfig`; `model="cnn"` trains the patch CNN, whose learning curves this
# notebook shows (the default family, a random forest, is one fit: docs/training.md).

# %%
bar, progress = progress_bar("train_model")
res = train_model(selected, OUT / "model" / "model.pt", model="cnn", epochs=EPOCHS, device=DEVICE, seed=0,
                  progress=progress)
bar.close()
print(f"{len(res.history)} epochs on {res.device} in {res.seconds:.1f} s; best epoch {res.best_epoch}; "
      f"validation overall accuracy {res.val_overall_accuracy:.3f}")
print("model file:", res.model_path)
display(Image(filename=str(res.curves_path)))

# %% [markdown]
# ## 4. Evaluate on the held-out patches (PyCM)
#
# `evaluate_model` predicts the held-out patches and builds the PyCM confusion matrix. It
# writes the summary, PyCM's HTML report, the matrix CSV, the heatmap and the predictions.
# These numbers come from patches the model never saw.

# %%
qc = evaluate_model(res.model_path, test_set, OUT / "qc", device=DEVICE)
print(f"QC on {qc['n']} held-out patches:")
print(format_qc(qc))
display(Image(filename=str(OUT / "qc" / "confusion_matrix.png")))

# %% [markdown]
# On a notebook server with a GPU, the same cells train on CUDA, because
# `resolve_device("auto")` picks it. For long runs, submit the work to the WPS instead
# (notebooks 01 and 02). The job then runs on the server and survives closing this
# notebook.
