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
# # EuroSAT through the WPS: balance → train → evaluate
#
# This notebook runs the three steps of geoml-hub's patch workflow as OGC WPS jobs, with
# `geoml_hub.client` (every WPS process is a Python function):
#
# 1. **balance** the training sample with the cluster-based algorithm of the ISDCT SB RAS
#    geoportal, and look at the clusters;
# 2. **train** a patch CNN on the balanced sample, and look at its training curves;
# 3. **evaluate** the model with PyCM: overall accuracy, kappa, PPV and TPR per class, and
#    the confusion-matrix heatmap.
#
# **What it needs**
#
# - a geoml-hub WPS service: in a geoml-hub user server `GEOML_WPS_URL` and
#   `JUPYTERHUB_API_TOKEN` are already set; standalone, start one and point
#   `GEOML_WPS_URL` at it:
#
#       geoml-hub wps serve --data-root data=../shared/data
#       export GEOML_WPS_URL=http://127.0.0.1:5000
#
# - the EuroSAT sample tree on the server, `data/eurosat_ms` (269 Sentinel-2 patches,
#   13 bands, 64 × 64 pixels, 10 classes; the same folder is `~/data/eurosat_ms` in your
#   notebook server);
# - `GEOML_DEMO_EPOCHS` (optional): training epochs, default 60 (the recommended setting
#   of docs/training.md: one to two minutes of training on 2 CPU cores); a small value
#   such as 3 makes a quick run.
#
# Run the cells top to bottom; nothing needs editing. Files the jobs write are downloaded
# into `~/.cache/geoml-hub/jobs/<job id>/`.

# %%
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

# %% [markdown]
# ## 1. Balance the training sample
#
# `balance_samples` is the balancing algorithm of the ISDCT SB RAS geoportal (Avramenko,
# Popova, Fedorov, ITAMS 2021): for every sample and band it takes the mean and standard
# deviation of the pixels, clusters these features with k-means (here per class), orders
# the clusters by size, keeps the small clusters (below a threshold) whole, and takes every
# `step`-th sample of the larger ones. Rare spectral variants survive and
# over-represented ones are thinned. geoml-hub adds a floor: no class is thinned below
# the size of the rarest class, so the max/min class ratio never grows.
#
# This EuroSAT subset is nearly balanced already (20 to 30 patches per class). With the
# default target (the median class size), integer steps would thin no class, so we ask
# for `step=2` to see the algorithm at work. On a strongly unbalanced sample (notebook 02)
# the default does the job.

# %%
bal = hub.balance_samples(samples=SAMPLES, step=2, seed=0)
print(f"balance_samples job {bal.job_id}")
print(f"kept {bal.samples_after} of {bal.samples_before} samples in {bal.n_classes} classes; "
      f"max/min class ratio {bal.ratio_before:.2f} -> {bal.ratio_after:.2f}")
for name, c in bal.summary["classes"].items():
    print(f"  {name:<21} {c['before']:>3} -> {c['after']:>3}   "
          f"{len(c['clusters'])} clusters, threshold {c['threshold']}, step {c['step']}")

# %% [markdown]
# The cluster plot shows every sample in the first two principal components of its
# features, one panel per class, coloured by cluster. Filled markers are kept samples,
# grey crosses are thinned-out ones.

# %%
display(Image(filename=str(bal.clusters_plot)))

# %% [markdown]
# ## 2. Train on the balanced sample
#
# `train_model` trains a small patch CNN (`family="cnn"`) with the recommended settings of
# docs/training.md. (The default family is a random forest on band statistics, texture and
# spectral indices, which scored higher in cross-validation; the CNN is shown here for its
# learning curves.)
# The input is the balanced manifest, chained by its dataset name
# (`jobs/<job id>/manifest.csv`), so nothing goes through the notebook. Training holds out
# 15 % of each class for validation and keeps the weights of the epoch with the lowest
# validation loss (early stopping).
#
# The **training curves** show loss and overall accuracy per epoch on the training and
# validation samples. Training loss that keeps falling while validation loss rises means
# overfitting. Curves that are still improving at the last epoch mean that more epochs
# would help (`GEOML_DEMO_EPOCHS`).

# %%
fit = hub.train_model(samples=bal.dataset("manifest"), family="cnn", epochs=EPOCHS, seed=0)
print(f"train_model job {fit.job_id}: {fit.epochs_run} epochs on {fit.device} in {fit.seconds:.0f} s, "
      f"best epoch {fit.best_epoch}")
print(f"validation overall accuracy {fit.val_overall_accuracy:.3f} "
      f"({fit.n_val} validation samples; trained on {fit.n_train})")
display(Image(filename=str(fit.curves)))

# %% [markdown]
# ## 3. Quality control with PyCM
#
# `evaluate_model` predicts every patch of a sample tree and compares the predictions
# with the patches' classes in a PyCM confusion matrix. This is the quality-control step
# of the geoportal paper. The summary shows:
#
# - **overall accuracy**: the share of correctly classified patches;
# - **kappa** (Cohen's): agreement beyond chance, 0 for chance and 1 for perfect;
# - **PPV** (user's accuracy): of the patches predicted as a class, the share that
#   really are that class;
# - **TPR** (producer's accuracy): of the patches of a class, the share found.
#
# We evaluate on the whole tree. That tree includes the patches the model was trained
# on, so these numbers are **optimistic**. The validation accuracy above is the honest
# number from this run. Notebook 03 holds out 20 % of the patches before training, and
# notebook 02 holds out whole regions of a scene.

# %%
qc = hub.evaluate_model(model=fit.dataset("model"), samples=SAMPLES)
print(f"evaluate_model job {qc.job_id}: QC on {qc.n} patches of {SAMPLES}")
print(format_qc(qc.summary))

# %% [markdown]
# The confusion-matrix heatmap has reference classes in rows and predicted classes in
# columns. Off-diagonal cells show which classes are confused. `qc.pycm` is the PyCM
# `ConfusionMatrix` itself, with every statistic PyCM computes, and `qc.report` is
# PyCM's HTML report.

# %%
display(Image(filename=str(qc.heatmap)))
cm = qc.pycm
print(f"PyCM: overall accuracy {cm.Overall_ACC:.3f}, kappa {cm.Kappa:.3f} "
      f"({cm.SOA1} agreement after Landis and Koch)")
print("PyCM HTML report:", qc.report)
