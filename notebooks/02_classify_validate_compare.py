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
# # Landsat 7, Chiapas: classify, validate and compare two method versions
#
# This notebook runs the scene workflow through the WPS with `geoml_hub.client` and ends
# the way the ISDCT SB RAS geoportal paper uses PyCM, by **comparing two versions of a
# method** on the same reference:
#
# 1. hold out 30 % of the labelled regions (whole regions) and **extract** pixel samples
#    from the rest;
# 2. **balance** the samples (cluster-based, as in the geoportal);
# 3. **train two model versions**: *A* on all 8 bands of the stack, *B* on the six
#    reflectance bands only (ETM+ 1, 2, 3, 4, 5, 7, without the thermal band and the
#    Fmask band);
# 4. **classify** the scene with each;
# 5. **validate** each classification on the held-out regions (PyCM);
# 6. **compare** the two (`compare_classifications`) and name the better version.
#
# **What it needs**
#
# - a geoml-hub WPS service (`GEOML_WPS_URL`, and `JUPYTERHUB_API_TOKEN` in a geoml-hub
#   user server; standalone: `geoml-hub wps serve --data-root data=../shared/data` and
#   `export GEOML_WPS_URL=http://127.0.0.1:5000`);
# - the Chiapas scene and its label raster on the server, `data/landsat7_chiapas/`
#   (`~/data/landsat7_chiapas/` in your notebook server): a 250 × 250-pixel Landsat 7
#   ETM+ stack of 18 Nov 1999 and 718 labelled pixels in 5 classes;
# - `GEOML_DEMO_EPOCHS` (optional): training epochs of each version, default 60 (the
#   recommended setting); a small value such as 3 makes a quick run.
#
# Both versions train, classify and validate **at the same time**: the calls use
# `wait=False` and return job handles, and the server runs two jobs in parallel.
# Plotting the maps needs matplotlib and rasterio, which come with geoml-hub.

# %%
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
    """Show a matplotlib figure as an inline PNG (whatever the backend) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    display(Image(data=buf.getvalue()))


# %% [markdown]
# ## 1. Spatial split and training samples
#
# With `test_fraction=0.3`, `extract_samples` first splits the label raster by **whole
# regions** (connected groups of same-class pixels), as iota2 does, so no test pixel
# touches a training pixel. Pixels that touch are nearly identical, and a pixel-wise
# random split would overstate the accuracy. The samples come from the training regions
# only, and the held-out labels come back as `reference_test`.

# %%
ext = hub.extract_samples(scene=SCENE, reference=LABELS, test_fraction=0.3, class_names=CLASS_NAMES, seed=0)
print(f"extract_samples job {ext.job_id}: {ext.sample_count} pixel samples from {ext.n_regions} training "
      f"regions; {ext.test_regions} regions held out for testing")
print("samples per class:", ext.class_counts)
print("held-out reference:", ext.reference_test)

# %% [markdown]
# ## 2. Balance
#
# Forest dominates the labels and water is rare. The geoportal's cluster-based balancing
# thins the large classes cluster by cluster, towards the median class size.

# %%
bal = hub.balance_samples(samples=ext.samples, seed=0)
print(f"balance_samples job {bal.job_id}: kept {bal.samples_after} of {bal.samples_before} samples; "
      f"max/min class ratio {bal.ratio_before:.1f} -> {bal.ratio_after:.1f}")
display(Image(filename=str(bal.clusters_plot)))

# %% [markdown]
# ## 3. Two model versions
#
# Both versions train on the same balanced manifest with the same settings and seed. Only
# the input bands differ. `bands` selects bands of the samples (1-based). The model file
# records them, so `classify_scene` reads the same bands from the scene without a band map.

# %%
jobs = {name: hub.train_model(samples=bal.dataset("manifest"), family="cnn", epochs=EPOCHS, bands=bands, seed=0,
                             wait=False)
        for name, bands in VERSIONS.items()}
fits = {name: job.wait() for name, job in jobs.items()}
for name, fit in fits.items():
    print(f"{name}: train_model job {fit.job_id}, {fit.epochs_run} epochs on {fit.device}, "
          f"validation overall accuracy {fit.val_overall_accuracy:.3f}")
for name, fit in fits.items():
    print(name)
    display(Image(filename=str(fit.curves)))

# %% [markdown]
# ## 4. Classify the scene with each version
#
# A pixel model classifies every pixel of the scene. The result is a `uint8` GeoTIFF on
# the scene's grid, with a colour table and the class names in its `CLASS_NAMES` tag.

# %%
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

# %% [markdown]
# ## 5. Validate each version on the held-out regions
#
# `validate_classification` compares a classification with the held-out labels pixel by
# pixel, in a PyCM confusion matrix (the geoportal's quality control). PPV is the user's
# accuracy and TPR the producer's accuracy of each class.

# %%
jobs = {name: hub.validate_classification(classification=cls.dataset("classification"),
                                          reference=ext.reference_test, wait=False)
        for name, cls in maps.items()}
checks = {name: job.wait() for name, job in jobs.items()}
for name, qc in checks.items():
    print(f"== {name}: validate_classification job {qc.job_id}")
    print(format_qc(qc.summary))
    print()

# %%
for name, qc in checks.items():
    print(name)
    display(Image(filename=str(qc.heatmap)))

# %% [markdown]
# ## 6. Compare the two versions
#
# This is how the geoportal paper uses PyCM: `compare_classifications` validates both
# versions against the same reference and builds a side-by-side table of overall
# accuracy, kappa, macro PPV, and PPV and TPR per class. It names the **better** version
# by the higher overall accuracy, with ties broken by kappa. It also reports PyCM's own
# `Compare` verdict, which weighs class-based and overall scores. The two can disagree,
# for example when one version is more accurate overall but misses a rare class
# entirely.

# %%
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

# %% [markdown]
# ### How to read it
#
# The test set is small: 256 pixels in 14 regions, with few water and urban pixels. A
# difference of a few hundredths in overall accuracy can come from the random start of
# training alone. Before you trust a verdict, repeat both versions with a few `seed`
# values. On a real project, give `compare_classifications` your own versions: another
# band set, patch size, balancing setting, or number of epochs. `cmp.report_a` and
# `cmp.report_b` are PyCM's full HTML reports.
