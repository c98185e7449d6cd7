# %% [markdown]
# # geoml-hub through the WPS: extract → balance → train → classify → validate
#
# A notebook-style script (cells marked `# %%`; open it in JupyterLab with jupytext, or run
# it with Python). It calls the WPS processes with `geoml_hub.client`: the service URL comes
# from `GEOML_WPS_URL` and a token from `JUPYTERHUB_API_TOKEN` when they are set (as in a
# geoml-hub user server); standalone, start a server first:
#
#     geoml-hub wps serve --data-root data=../shared/data
#     GEOML_WPS_URL=http://127.0.0.1:5000 python notebooks/wps_quickstart.py
#
# The data are the Landsat 7 scene of Chiapas and its partial label raster from the shared
# remote-sensing database (`data/...` on the server, `~/data` in a user server).
# Training uses the default model family, a random forest on band values and spectral indices
# (docs/training.md); `GEOML_DEMO_FAMILY=cnn` trains the small CNN instead, and then
# `GEOML_DEMO_EPOCHS` shortens its training (default 60, the recommended setting).

# %%
import os

from geoml_hub.cli import format_qc
from geoml_hub.client import Client

SCENE = "data/landsat7_chiapas/LE70220491999322EDC01_stack.gtif"
LABELS = "data/landsat7_chiapas/training_data.gtif"
FAMILY = os.environ.get("GEOML_DEMO_FAMILY", "forest")
EPOCHS = int(os.environ.get("GEOML_DEMO_EPOCHS", "60"))

hub = Client()
print("processes:", ", ".join(hub.processes))

# %% [markdown]
# ## 1. Training samples: hold out 30 % of the labelled regions, extract the rest

# %%
ext = hub.extract_samples(scene=SCENE, reference=LABELS, test_fraction=0.3,
                          class_names="1=forest,2=water,3=herbaceous,4=barren,5=urban")
print(f"{ext.sample_count} samples from {ext.n_regions} regions; {ext.test_regions} regions held out")
print(ext.class_counts)

# %% [markdown]
# ## 2. Balance the classes (cluster-based thinning of the large classes)

# %%
bal = hub.balance_samples(samples=ext.samples)
print(f"kept {bal.samples_after} of {bal.samples_before} samples; "
      f"max/min class ratio {bal.ratio_before:.2f} -> {bal.ratio_after:.2f}")
bal.clusters_plot  # the cluster plot (a PNG, downloaded)

# %% [markdown]
# ## 3. Train (a random forest unless `GEOML_DEMO_FAMILY` says otherwise), classify the scene, validate on the held-out regions

# %%
fit = hub.train_model(samples=bal.dataset("manifest"), family=FAMILY, epochs=EPOCHS)
print(f"{FAMILY}: {fit.epochs_run} epoch(s) on {fit.device}; validation overall accuracy {fit.val_overall_accuracy:.3f}")
cls = hub.classify_scene(model=fit.dataset("model"), scene=SCENE)
qc = hub.validate_classification(classification=cls.dataset("classification"), reference=ext.reference_test)

# %%
print("QC of the classification on the held-out reference pixels:")
print(format_qc(qc.summary))
print("confusion matrix (PyCM):", qc.pycm.table)
