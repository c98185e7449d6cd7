"""The WPS processes, executed in-process through PyWPS on the real data (no mocks).

One service (module scope) over a fresh state directory with the real data as the ``data``
root. The Chiapas chain runs extract_samples (with a spatial split) -> balance_samples ->
train_model -> classify_scene (both dates) -> validate_classification and
compare_classifications; the EuroSAT chain runs balance_samples -> train_model ->
evaluate_model. Every figure a process returns is checked against the file it wrote and
against the core library called directly on the same inputs.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote

import numpy as np
import pytest
from lxml import etree

from conftest import CHIAPAS_COUNTS, CHIAPAS_NAMES, DATA, EUROSAT_COUNTS, LABELS, SCENE_1999, SCENE_2002
from helpers import assert_png, read_csv_rows, read_json

from pywps.tests import client_for  # noqa: E402  (it turns logging off for the whole process)

logging.disable(logging.NOTSET)

from geoml_hub.processes import PROCESSES, identifiers  # noqa: E402
from geoml_hub.processes import build_service  # noqa: E402

PROCESS_IDENTIFIERS = identifiers()
from geoml_hub.wps.settings import Settings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NS = {"wps": "http://www.opengis.net/wps/1.0.0", "ows": "http://www.opengis.net/ows/1.1"}
SCENE_99 = "data/landsat7_chiapas/LE70220491999322EDC01_stack.gtif"
SCENE_02 = "data/landsat7_chiapas/LE70220492002106EDC00_stack.gtif"
REFERENCE = "data/landsat7_chiapas/training_data.gtif"
CLASS_NAMES = ",".join(f"{code}={name}" for code, name in CHIAPAS_NAMES.items())
TEST_FRACTION = 0.3


# -- the service and a small Execute client -----------------------------------------------------------------

@dataclass
class Wps:
    settings: Settings
    client: object

    def path(self, href: str) -> Path:
        """The file behind an output reference (``<outputs_url>/<uuid>/<name>``)."""
        base = self.settings.outputs_url + "/"
        assert href.startswith(base), href
        return self.settings.outputs_dir / href[len(base):]

    def dataset(self, href: str) -> str:
        """The dataset name of an output reference (``jobs/<uuid>/<name>``)."""
        return "jobs/" + href[len(self.settings.outputs_url) + 1:]

    def dataset_path(self, name: str) -> Path:
        assert name.startswith("jobs/"), name
        return self.settings.outputs_dir / name[len("jobs/"):]


@dataclass
class Result:
    """An Execute response: HTTP status, ExceptionReport or status, literal outputs and references."""

    status_code: int
    xml: object
    literals: Dict[str, str] = field(default_factory=dict)
    refs: Dict[str, str] = field(default_factory=dict)

    @property
    def exception(self) -> Optional[Tuple[str, str, str]]:
        """``(exceptionCode, locator, text)`` of an ExceptionReport (also inside a ProcessFailed status)."""
        exc = self.xml.find(".//ows:Exception", NS)
        if exc is None:
            return None
        return exc.get("exceptionCode"), exc.get("locator") or "", exc.findtext("ows:ExceptionText", "", NS).strip()

    @property
    def succeeded(self) -> bool:
        return self.xml.find("wps:Status/wps:ProcessSucceeded", NS) is not None

    @property
    def failed(self) -> bool:
        return self.xml.find("wps:Status/wps:ProcessFailed", NS) is not None

    def float(self, name: str) -> float:
        return float(self.literals[name])

    def int(self, name: str) -> int:
        return int(self.literals[name])


def parse_result(resp) -> Result:
    xml = etree.fromstring(resp.get_data())
    res = Result(resp.status_code, xml)
    for out in xml.iterfind("wps:ProcessOutputs/wps:Output", NS):
        ident = out.findtext("ows:Identifier", namespaces=NS)
        lit = out.find("wps:Data/wps:LiteralData", NS)
        ref = out.find("wps:Reference", NS)
        if lit is not None:
            res.literals[ident] = lit.text
        elif ref is not None:
            res.refs[ident] = ref.get("href")
    return res


def kvp(inputs: Sequence[Tuple[str, object]]) -> str:
    """DataInputs for a GET request: each value percent-encoded (PyWPS splits on ``;``, ``=`` and ``@``
    and then unquotes the value), then the whole parameter encoded for the URL."""
    return quote(";".join(f"{k}={quote(str(v), safe='')}" for k, v in inputs), safe="")


def execute(wps: Wps, identifier: str, inputs: Sequence[Tuple[str, object]]) -> Result:
    """Synchronous Execute by GET (KVP)."""
    resp = wps.client.get(f"?service=WPS&request=Execute&version=1.0.0&identifier={identifier}"
                          f"&DataInputs={kvp(inputs)}")
    return parse_result(resp)


def execute_post(wps: Wps, identifier: str, inputs: Sequence[Tuple[str, object]]) -> Result:
    """Synchronous Execute by POST (an XML Execute document)."""
    wps_ns, ows_ns = NS["wps"], NS["ows"]
    doc = etree.Element(f"{{{wps_ns}}}Execute", nsmap={"wps": wps_ns, "ows": ows_ns},
                        service="WPS", version="1.0.0")
    etree.SubElement(doc, f"{{{ows_ns}}}Identifier").text = identifier
    data_inputs = etree.SubElement(doc, f"{{{wps_ns}}}DataInputs")
    for k, v in inputs:
        inp = etree.SubElement(data_inputs, f"{{{wps_ns}}}Input")
        etree.SubElement(inp, f"{{{ows_ns}}}Identifier").text = k
        data = etree.SubElement(inp, f"{{{wps_ns}}}Data")
        etree.SubElement(data, f"{{{wps_ns}}}LiteralData").text = str(v)
    return parse_result(wps.client.post_xml(doc=doc))


def ok(result: Result) -> Result:
    assert result.status_code == 200 and result.succeeded, etree.tostring(result.xml)[:3000]
    return result


def snapshot(root: Path) -> Dict[str, Tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def data_snapshot(data_dir):
    return snapshot(data_dir)


@pytest.fixture(scope="module")
def wps(tmp_path_factory, data_snapshot) -> Wps:
    from geoml_hub.wps import settings as settings_module

    state = tmp_path_factory.mktemp("wps") / "state"
    with pytest.MonkeyPatch.context() as mp:
        # build_service activates the settings process-wide: undo that after this module
        for var in ("PYWPS_CFG", settings_module.ENV_SETTINGS):
            mp.setenv(var, os.environ.get(var, ""))
        mp.setattr(settings_module, "_CURRENT", settings_module._CURRENT)
        settings = Settings(state_dir=state, data_roots={"data": DATA})
        yield Wps(settings, client_for(build_service(settings)))


def job_dir(wps: Wps, result: Result) -> Path:
    """The outputs/<uuid> directory of a job (from any of its file outputs)."""
    dirs = {wps.path(h).parent for h in result.refs.values()}
    assert len(dirs) == 1, dirs
    d = dirs.pop()
    assert d.parent == wps.settings.outputs_dir and d.is_dir()
    return d


def assert_files(wps: Wps, result: Result) -> Dict[str, Path]:
    """Every file output exists under outputs/<uuid>/ with a unique base name."""
    paths = {k: wps.path(h) for k, h in result.refs.items()}
    assert len({p.name for p in paths.values()}) == len(paths)
    d = job_dir(wps, result)
    for name, p in paths.items():
        assert p.parent == d and p.is_file() and p.stat().st_size > 0, (name, p)
    return paths


# -- the Chiapas chain -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chiapas_extract(wps) -> Result:
    return ok(execute(wps, "extract_samples", [("scene", SCENE_99), ("reference", REFERENCE),
                                               ("class_names", CLASS_NAMES), ("test_fraction", TEST_FRACTION)]))


@pytest.fixture(scope="module")
def chiapas_balance(wps, chiapas_extract) -> Result:
    return ok(execute(wps, "balance_samples", [("samples", chiapas_extract.literals["samples"])]))


@pytest.fixture(scope="module")
def chiapas_train(wps, chiapas_balance) -> Result:
    return ok(execute(wps, "train_model", [("samples", wps.dataset(chiapas_balance.refs["manifest"])),
                                           ("family", "cnn"), ("epochs", 2), ("device", "cpu")]))


def _classify(wps, train: Result, scene: str, tile_size: int) -> Result:
    return ok(execute(wps, "classify_scene", [("model", wps.dataset(train.refs["model"])), ("scene", scene),
                                              ("tile_size", tile_size), ("device", "cpu")]))


@pytest.fixture(scope="module")
def classified_1999(wps, chiapas_train) -> Result:
    return _classify(wps, chiapas_train, SCENE_99, 64)


@pytest.fixture(scope="module")
def classified_2002(wps, chiapas_train) -> Result:
    return _classify(wps, chiapas_train, SCENE_02, 512)


@pytest.fixture(scope="module")
def validated_1999(wps, chiapas_extract, classified_1999) -> Result:
    return ok(execute(wps, "validate_classification",
                      [("classification", wps.dataset(classified_1999.refs["classification"])),
                       ("reference", chiapas_extract.literals["reference_test"]),
                       ("confidence", wps.dataset(classified_1999.refs["confidence"]))]))


# -- the EuroSAT chain -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def eurosat_balance(wps) -> Result:
    return ok(execute(wps, "balance_samples", [("samples", "data/eurosat_ms"), ("seed", 0)]))


@pytest.fixture(scope="module")
def eurosat_train(wps, eurosat_balance) -> Result:
    return ok(execute(wps, "train_model", [("samples", wps.dataset(eurosat_balance.refs["manifest"])),
                                           ("family", "cnn"), ("epochs", 2), ("bands", "2,3,4,8"), ("device", "cpu"),
                                           ("batch_size", 64)]))


# == GetCapabilities and DescribeProcess ====================================================================

def test_capabilities_list_exactly_the_eight_processes(wps):
    resp = wps.client.get("?service=WPS&request=GetCapabilities&version=1.0.0")
    assert resp.status_code == 200
    xml = etree.fromstring(resp.get_data())
    idents = [e.text for e in xml.iterfind(".//wps:ProcessOfferings/wps:Process/ows:Identifier", NS)]
    assert idents == list(PROCESS_IDENTIFIERS)
    assert len(idents) == 8
    for proc in xml.iterfind(".//wps:ProcessOfferings/wps:Process", NS):
        assert proc.findtext("ows:Title", namespaces=NS).strip()
        assert proc.findtext("ows:Abstract", namespaces=NS).strip()
        assert proc.findall("ows:Keywords/ows:Keyword", NS)  # (PyWPS 1.0.0 lists keywords only here)


#: (process, input) -> (default, allowed values or (min, max[, spacing]), minOccurs)
EXPECTED_INPUTS = {
    ("extract_samples", "scene"): (None, None, 1),
    ("extract_samples", "patch_size"): ("1", ("1", "63", "2"), 0),
    ("extract_samples", "test_fraction"): ("0.0", ("0.0", "0.9"), 0),
    ("extract_samples", "class_names"): (None, None, 0),
    ("extract_samples", "reference_nodata"): ("0.0", None, 0),
    ("balance_samples", "per_class"): ("True", None, 0),
    ("balance_samples", "step"): (None, ("1", "1000000000"), 0),
    ("balance_samples", "seed"): ("0", ("0", str(2 ** 31 - 1)), 0),
    ("train_model", "epochs"): ("60", ("1", "500"), 0),
    ("train_model", "device"): ("auto", ["auto", "cpu", "cuda"], 0),
    ("train_model", "augment"): ("True", None, 0),
    ("train_model", "val_fraction"): ("0.15", ("0.0", "0.9"), 0),
    ("evaluate_model", "tta"): ("False", None, 0),
    ("evaluate_model", "model"): (None, None, 1),
    ("classify_scene", "tile_size"): ("512", ("64", "4096"), 0),
    ("classify_scene", "device"): ("auto", ["auto", "cpu", "cuda"], 0),
    ("classify_scene", "stride"): (None, ("1", "4096"), 0),
    ("validate_classification", "reference_nodata"): ("0.0", None, 0),
    ("compare_classifications", "name_a"): ("A", None, 0),
    ("compare_classifications", "name_b"): ("B", None, 0),
    ("compare_classifications", "reference"): (None, None, 1),
}
EXPECTED_OUTPUTS = {
    "extract_samples": {"samples", "sample_count", "class_counts", "regions", "reference_test"},
    "balance_samples": {"manifest", "summary", "clusters_plot", "samples_before", "samples_after", "ratio_before",
                        "ratio_after"},
    "train_model": {"model", "history", "curves", "val_overall_accuracy", "epochs_run", "best_epoch", "n_train",
                    "device"},
    "evaluate_model": {"overall_accuracy", "kappa", "n", "summary", "report", "matrix", "heatmap", "predictions"},
    "check_compatibility": {"compatible", "reason", "summary", "figure"},
    "classify_scene": {"classification", "confidence", "compatible", "compatibility", "pixels", "class_counts"},
    "validate_classification": {"overall_accuracy", "kappa", "n", "summary", "report", "matrix", "heatmap",
                                "reliability"},
    "compare_classifications": {"better", "overall_accuracy_a", "overall_accuracy_b", "kappa_a", "kappa_b", "summary",
                                "comparison", "report_a", "report_b", "heatmap_a", "heatmap_b"},
}


@pytest.mark.parametrize("identifier", PROCESS_IDENTIFIERS)
def test_describe_process(wps, identifier):
    resp = wps.client.get(f"?service=WPS&request=DescribeProcess&version=1.0.0&identifier={identifier}")
    assert resp.status_code == 200
    desc = etree.fromstring(resp.get_data()).find("ProcessDescription")
    assert desc.findtext("ows:Identifier", namespaces=NS) == identifier
    assert desc.get("storeSupported") == "true" and desc.get("statusSupported") == "true"
    assert len(desc.findtext("ows:Abstract", namespaces=NS)) > 80
    inputs = {i.findtext("ows:Identifier", namespaces=NS): i for i in desc.iterfind("DataInputs/Input", NS)}
    for ident, inp in inputs.items():
        assert inp.findtext("ows:Title", namespaces=NS).strip(), ident
        assert inp.findtext("ows:Abstract", namespaces=NS).strip(), ident
    for (proc, ident), (default, allowed, min_occurs) in EXPECTED_INPUTS.items():
        if proc != identifier:
            continue
        inp = inputs[ident]
        assert inp.get("minOccurs") == str(min_occurs), ident
        assert inp.findtext("LiteralData/DefaultValue") == default, ident
        if isinstance(allowed, list):
            assert [v.text for v in inp.iterfind("LiteralData/ows:AllowedValues/ows:Value", NS)] == allowed
        elif isinstance(allowed, tuple):
            rng = inp.find("LiteralData/ows:AllowedValues/ows:Range", NS)
            got = (rng.findtext("ows:MinimumValue", namespaces=NS), rng.findtext("ows:MaximumValue", namespaces=NS))
            if len(allowed) == 3:
                got += (rng.findtext("ows:Spacing", namespaces=NS),)
            assert got == allowed, ident
    if identifier in ("extract_samples", "classify_scene"):
        assert inputs["scene"].get("maxOccurs") == "20"
    outputs = {o.findtext("ows:Identifier", namespaces=NS): o for o in desc.iterfind("ProcessOutputs/Output", NS)}
    assert EXPECTED_OUTPUTS[identifier] <= set(outputs)
    if identifier == "classify_scene":
        fmt = outputs["classification"].find("ComplexOutput/Default/Format/MimeType")
        assert fmt.text == "image/tiff; subtype=geotiff"


def test_declared_parameters_are_the_inputs_and_the_core_keywords():
    """Every parameter a process declares (its param_class) is an input with the declared
    default, and a keyword argument of the core function it calls (with that default)."""
    import inspect

    from geoml_hub import balancing, classification, compatibility, params, training, validation

    core = {"balance_samples": balancing.balance_samples, "train_model": training.TrainConfig,
            "classify_scene": classification.classify_scene, "evaluate_model": validation.evaluate_model,
            "check_compatibility": compatibility.check_compatibility}
    for cls in PROCESSES:
        if cls.param_class is None:
            continue
        process = cls()
        inputs = {i.identifier: i for i in process.inputs}
        signature = inspect.signature(core[cls.identifier]).parameters
        for p in params.declared(cls.param_class):
            assert inputs[p.wps].min_occurs == 0 and inputs[p.wps].abstract == p.help, (cls.identifier, p.name)
            assert signature[p.name].default == p.default, (cls.identifier, p.name)


def test_registry_attributes_are_published_as_metadata(wps):
    """The map reads qc and chain from GetCapabilities' ows:Metadata."""
    resp = wps.client.get("?service=WPS&request=GetCapabilities&version=1.0.0")
    xml = etree.fromstring(resp.get_data())
    role = "{http://www.w3.org/1999/xlink}role"
    title = "{http://www.w3.org/1999/xlink}title"
    got = {}
    for proc in xml.iterfind(".//wps:ProcessOfferings/wps:Process", NS):
        ident = proc.findtext("ows:Identifier", namespaces=NS)
        got[ident] = sorted((m.get(role).split("#")[1], m.get(title)) for m in proc.findall("ows:Metadata", NS))
    assert ("qc", "true") in got["validate_classification"] and ("qc", "true") in got["evaluate_model"]
    assert ("chain", "samples=balance_samples.manifest,extract_samples.samples") in got["train_model"]
    assert {i for i, m in got.items() if ("kubernetes", "true") in m} == {"train_model", "classify_scene",
                                                                          "evaluate_model", "check_compatibility"}


# == the Chiapas chain ========================================================================================

def test_extract_samples_with_spatial_split(wps, chiapas_extract, tmp_path):
    import rasterio

    from geoml_hub.extraction import extract_samples, split_regions

    res = chiapas_extract
    files = assert_files(wps, res)
    d = job_dir(wps, res)
    # the library on the same inputs
    split = split_regions(LABELS, tmp_path / "split", TEST_FRACTION, 0, 0)
    lib = extract_samples(SCENE_1999, split.train_reference, tmp_path / "samples", 1, 0, CHIAPAS_NAMES)
    counts = read_json(files["class_counts"])
    assert counts == lib.counts
    assert res.int("sample_count") == sum(lib.counts.values()) == sum(counts.values())
    assert res.int("n_classes") == 5
    assert res.int("test_regions") == len(split.test_regions) > 0
    assert res.int("skipped_nodata") == 0
    assert res.int("n_regions") == len(read_csv_rows(files["regions"])) == len(split.train_regions)
    assert {r["side"] for r in read_csv_rows(files["split_regions"])} == {"train", "test"}
    # dataset-name outputs point into the job's own directory
    tree = wps.dataset_path(res.literals["samples"])
    assert res.literals["samples"] == f"jobs/{d.name}/samples" and tree.is_dir()
    assert read_json(tree / "classes.json") == {n: c for c, n in CHIAPAS_NAMES.items()}
    assert sorted(p.name for p in tree.iterdir() if p.is_dir()) == sorted(lib.counts)
    test_ref = wps.dataset_path(res.literals["reference_test"])
    assert res.literals["reference_test"] == f"jobs/{d.name}/reference_test.tif"
    with rasterio.open(test_ref) as a, rasterio.open(split.test_reference) as b, rasterio.open(LABELS) as full:
        test_labels = a.read(1)
        assert np.array_equal(test_labels, b.read(1))
        assert a.transform == full.transform and a.crs == full.crs
    # whole regions on each side: training samples + held-out pixels = every labelled pixel
    assert res.int("sample_count") + int((test_labels > 0).sum()) == sum(CHIAPAS_COUNTS.values())


def test_extract_samples_by_post_without_split(wps):
    res = ok(execute_post(wps, "extract_samples", [("scene", SCENE_99), ("reference", REFERENCE),
                                                   ("class_names", CLASS_NAMES), ("patch_size", 3)]))
    files = assert_files(wps, res)
    assert read_json(files["class_counts"]) == CHIAPAS_COUNTS
    assert res.int("sample_count") == sum(CHIAPAS_COUNTS.values()) == 718
    assert res.int("test_regions") == 0
    # outputs that only a split has are left out, not sent as "None"
    assert "reference_test" not in res.literals and "split_regions" not in res.refs
    one = next(wps.dataset_path(res.literals["samples"]).glob("forest/*.npy"))
    assert np.load(one).shape[1:] == (8, 3, 3)


def test_balance_samples_chiapas(wps, chiapas_extract, chiapas_balance):
    from geoml_hub.balancing import balance_samples
    from geoml_hub.samples import load_samples

    res = chiapas_balance
    files = assert_files(wps, res)
    assert files["manifest"].name == "manifest.csv"
    summary = read_json(files["summary"])
    rows = read_csv_rows(files["manifest"])
    assert res.int("samples_before") == chiapas_extract.int("sample_count") == summary["total_before"]
    assert res.int("samples_after") == len(rows) == summary["total_after"] < res.int("samples_before")
    assert res.float("ratio_after") == pytest.approx(summary["ratio_after"])
    assert res.float("ratio_after") <= res.float("ratio_before")
    assert_png(files["clusters_plot"])
    # the library, on the same tree with the same seed, keeps the same samples
    lib = balance_samples(load_samples(wps.dataset_path(chiapas_extract.literals["samples"])), seed=0)
    assert lib.summary["total_after"] == res.int("samples_after")
    assert {c: v["after"] for c, v in lib.summary["classes"].items()} == \
        {c: v["after"] for c, v in summary["classes"].items()}
    assert {Path(r["file"]).parent.name for r in rows} == set(CHIAPAS_NAMES.values())


def test_train_model_on_balanced_manifest(wps, chiapas_balance, chiapas_train):
    from geoml_hub.models import load_model

    res = chiapas_train
    files = assert_files(wps, res)
    assert files["model"].name == "model.pt"
    assert res.int("epochs_run") == 2
    assert 1 <= res.int("best_epoch") <= 2
    assert res.int("n_train") + res.int("n_val") == chiapas_balance.int("samples_after")
    assert res.literals["device"] == "cpu"
    history = read_csv_rows(files["history"])
    assert len(history) == 2
    acc = res.float("val_overall_accuracy")
    assert 0.0 <= acc <= 1.0
    assert acc == pytest.approx(float(history[res.int("best_epoch") - 1]["val_overall_accuracy"]))
    assert_png(files["curves"])
    model = load_model(files["model"], device="cpu")
    assert dict(zip(model.class_codes, model.class_names)) == CHIAPAS_NAMES
    assert model.sample_bands == 8 and model.is_pixel_model


def test_classify_scene(wps, classified_1999, classified_2002, chiapas_train):
    import rasterio

    for res, scene in ((classified_1999, SCENE_1999), (classified_2002, SCENE_2002)):
        files = assert_files(wps, res)
        assert files["classification"].name == "classification.tif"
        with rasterio.open(files["classification"]) as dst, rasterio.open(scene) as src:
            arr = dst.read()
            assert arr.shape == (1, 250, 250) and arr.dtype == np.uint8
            assert dst.transform == src.transform and dst.crs == src.crs and dst.nodata == 255
        assert res.int("pixels") == 62500 and res.int("nodata_pixels") == 0 and res.int("stride") == 1
        counts = read_json(files["class_counts"])
        assert sum(counts.values()) == res.int("pixels") - res.int("nodata_pixels")
        codes = {n: c for c, n in CHIAPAS_NAMES.items()}
        assert {n: int((arr == codes[n]).sum()) for n in counts} == counts
        assert set(np.unique(arr)) <= set(CHIAPAS_NAMES)
        # the confidence raster (on by default) and the compatibility check that ran first
        with rasterio.open(files["confidence"]) as conf, rasterio.open(scene) as src:
            c = conf.read(1)
            assert conf.dtypes[0] == "float32" and conf.nodata == -1 and conf.transform == src.transform
            assert c.min() >= 0.0 and c.max() <= 1.0
        assert read_json(files["compatibility"])["compatible"] == (res.literals["compatible"] == "compatible")
    # the model was trained on the 1999 scene; the 2002 scene has clouds and saturated pixels
    assert classified_1999.literals["compatible"] == "compatible"
    assert classified_2002.literals["compatible"] == "not compatible"
    assert read_json(assert_files(wps, classified_2002)["compatibility"])["source"] == [SCENE_02]


def test_validate_classification_on_held_out_regions(wps, chiapas_extract, classified_1999, validated_1999):
    from geoml_hub.validation import validate_classification

    res = validated_1999
    files = assert_files(wps, res)
    summary = read_json(files["summary"])
    oa = res.float("overall_accuracy")
    assert 0.0 <= oa <= 1.0
    assert oa == pytest.approx(summary["overall_accuracy"])
    assert res.float("kappa") == pytest.approx(summary["kappa"])
    lib = validate_classification(wps.path(classified_1999.refs["classification"]),
                                  wps.dataset_path(chiapas_extract.literals["reference_test"]))
    assert oa == pytest.approx(lib["overall_accuracy"])
    assert res.int("n") == lib["n"] == sum(CHIAPAS_COUNTS.values()) - chiapas_extract.int("sample_count")
    assert_png(files["heatmap"])
    assert "<html" in files["report"].read_text(encoding="utf-8").lower()
    # the confidence input: accuracy per confidence bin
    assert_png(files["reliability"])
    bins = summary["confidence_bins"]
    assert sum(b["n"] for b in bins["bins"]) == bins["n"] == res.int("n")
    assert bins["confidence"] == wps.dataset(classified_1999.refs["confidence"])


def test_check_compatibility(wps, eurosat_train, chiapas_train):
    """The verdicts of the issue through the WPS: a EuroSAT (Sentinel-2) model is not fit for the
    Landsat scene even with a band map; it is fit for the EuroSAT tree; the Chiapas model is fit
    for the scene it was trained on."""
    eurosat = wps.dataset(eurosat_train.refs["model"])
    res = ok(execute(wps, "check_compatibility", [("model", eurosat), ("scene", SCENE_99), ("band_map", "1,2,3,4"),
                                                  ("device", "cpu")]))
    files = assert_files(wps, res)
    summary = read_json(files["summary"])
    assert res.literals["compatible"] == "not compatible" and summary["compatible"] is False
    assert res.literals["reason"] == summary["reason"] and "band 2:" in summary["reason"]
    assert summary["source"] == [SCENE_99]
    assert [b["scene_band"] for b in summary["bands"]] == [1, 2, 3, 4]
    assert_png(files["figure"])
    res = ok(execute(wps, "check_compatibility", [("model", eurosat), ("samples", "data/eurosat_ms"),
                                                  ("device", "cpu")]))
    assert res.literals["compatible"] == "compatible"
    res = ok(execute(wps, "check_compatibility", [("model", wps.dataset(chiapas_train.refs["model"])),
                                                  ("scene", SCENE_99), ("device", "cpu")]))
    assert res.literals["compatible"] == "compatible", res.literals["reason"]
    res = execute(wps, "check_compatibility", [("model", eurosat), ("scene", SCENE_99),
                                               ("samples", "data/eurosat_ms")])
    assert res.failed and "give either scene" in res.exception[2]
    res = execute(wps, "check_compatibility", [("model", eurosat), ("samples", "data/eurosat_ms"),
                                               ("max_outside", 2)])
    assert res.status_code == 400 and res.exception[:2] == ("InvalidParameterValue", "max_outside")


def test_compare_classifications_by_post(wps, chiapas_extract, classified_1999, classified_2002, validated_1999):
    from geoml_hub.validation import validate_classification

    ref = chiapas_extract.literals["reference_test"]
    res = ok(execute_post(wps, "compare_classifications", [
        ("classification_a", wps.dataset(classified_1999.refs["classification"])),
        ("classification_b", wps.dataset(classified_2002.refs["classification"])),
        ("reference", ref), ("name_a", "y1999"), ("name_b", "y2002")]))
    files = assert_files(wps, res)
    assert {files[k].name for k in ("report_a", "report_b", "heatmap_a", "heatmap_b")} == \
        {"report_a.html", "report_b.html", "heatmap_a.png", "heatmap_b.png"}
    summary = read_json(files["summary"])
    assert res.float("overall_accuracy_a") == pytest.approx(validated_1999.float("overall_accuracy"))
    b = validate_classification(wps.path(classified_2002.refs["classification"]), wps.dataset_path(ref))
    assert res.float("overall_accuracy_b") == pytest.approx(b["overall_accuracy"])
    assert res.float("kappa_b") == pytest.approx(b["kappa"])
    for name, side in (("y1999", "a"), ("y2002", "b")):
        assert summary["table"]["overall_accuracy"][name] == pytest.approx(res.float(f"overall_accuracy_{side}"))
        assert read_json(files[f"summary_{side}"])["overall_accuracy"] == pytest.approx(
            res.float(f"overall_accuracy_{side}"))
        assert_png(files[f"heatmap_{side}"])
    key = {n: (res.float(f"overall_accuracy_{s}"), res.float(f"kappa_{s}"))
           for n, s in (("y1999", "a"), ("y2002", "b"))}
    expected = "tie" if key["y1999"] == key["y2002"] else max(key, key=key.get)
    assert res.literals["better"] == expected == (summary["better"] or "tie")
    rows = {r["statistic"]: r for r in read_csv_rows(files["comparison"])}
    assert float(rows["overall_accuracy"]["y2002"]) == pytest.approx(res.float("overall_accuracy_b"))


def test_progress_is_reported_per_window_and_per_epoch(wps, chiapas_train, chiapas_balance, tmp_path):
    """The tasks hand the core's progress callback through: one report per classified window,
    one per epoch (the process maps them onto the WPS status)."""
    from geoml_hub.wps.ogc import operations as tasks
    from geoml_hub.wps.ogc.inputs import Access
    from geoml_hub.wps.jobs.store import store_for
    from geoml_hub.wps.ogc.process import JobContext

    job = JobContext("0" * 32, Access("local", True), wps.settings, store_for(wps.settings.database), tmp_path)
    calls: List[Tuple[float, str]] = []
    tasks.classify_scene(job, wps.path(chiapas_train.refs["model"]), [SCENE_1999], tile_size=64, device="cpu",
                         progress=lambda f, m: calls.append((f, m)))
    windows = [m for _, m in calls if m.startswith("classified window")]
    assert len(windows) == 16 and windows[-1] == "classified window 16/16"  # ceil(250 / 64) ** 2
    assert [f for f, _ in calls] == sorted(f for f, _ in calls) and calls[-1][0] == 1.0
    calls.clear()
    tasks.train_model(job, wps.path(chiapas_balance.refs["manifest"]), model="cnn", epochs=3, device="cpu",
                      progress=lambda f, m: calls.append((f, m)))
    assert len(calls) == 1 + 3 and calls[-1][0] == 1.0


# == the EuroSAT chain ========================================================================================

def test_balance_train_evaluate_eurosat(wps, eurosat_balance, eurosat_train):
    bal = eurosat_balance
    files = assert_files(wps, bal)
    summary = read_json(files["summary"])
    assert bal.int("samples_before") == sum(EUROSAT_COUNTS.values()) == 269
    assert {c: v["before"] for c, v in summary["classes"].items()} == EUROSAT_COUNTS
    assert bal.int("samples_after") == len(read_csv_rows(files["manifest"]))
    assert bal.float("ratio_before") == pytest.approx(30 / 20)
    assert min(v["after"] for v in summary["classes"].values()) >= 20  # no class thinned below the rarest

    train = eurosat_train
    tfiles = assert_files(wps, train)
    assert train.int("epochs_run") == 2
    assert train.int("n_train") + train.int("n_val") == bal.int("samples_after")
    assert 0.0 <= train.float("val_overall_accuracy") <= 1.0

    res = ok(execute(wps, "evaluate_model", [("model", wps.dataset(train.refs["model"])),
                                             ("samples", "data/eurosat_ms"), ("device", "cpu")]))
    efiles = assert_files(wps, res)
    summary = read_json(efiles["summary"])
    oa = res.float("overall_accuracy")
    assert 0.0 <= oa <= 1.0 and oa == pytest.approx(summary["overall_accuracy"])
    assert res.float("kappa") == pytest.approx(summary["kappa"])
    preds = read_csv_rows(efiles["predictions"])
    assert res.int("n") == len(preds) == 269
    assert oa == pytest.approx(np.mean([p["reference"] == p["predicted"] for p in preds]))
    assert {p["reference"] for p in preds} == set(EUROSAT_COUNTS)
    assert tfiles["model"].parent != efiles["summary"].parent


# == bad inputs ================================================================================================

@pytest.fixture(scope="module")
def workspace(wps) -> Path:
    """Hostile and broken files in the workspace data root."""
    ws = wps.settings.workspace_dir
    outside = wps.settings.state_dir.parent / "outside"
    outside.mkdir(exist_ok=True)
    secret = outside / "secret.npy"
    np.save(secret, np.zeros((2, 8, 1, 1), dtype=np.int16))
    (ws / "escape.tif").symlink_to(secret)
    (ws / "junk.tif").write_bytes(b"this is not a raster at all\n" * 40)
    (ws / "truncated.tif").write_bytes(b"II*\x00" + b"\x00" * 60)
    # a tree whose class directory holds a link to a file outside the roots
    tree = ws / "linked_tree"
    for name in ("a", "b"):
        (tree / name).mkdir(parents=True)
        np.save(tree / name / "part.npy", np.ones((3, 8, 1, 1), dtype=np.int16))
    (tree / "b" / "stolen.npy").symlink_to(secret)
    inside = DATA / "eurosat_ms" / "Forest"
    forest = sorted(inside.glob("*.tif"))[0]
    river = sorted((DATA / "eurosat_ms" / "River").glob("*.tif"))[0]
    header = "file,index,class,code,cluster\n"
    (ws / "outside_manifest.csv").write_text(header + f"{forest},0,Forest,1,0\n{secret},0,River,8,0\n")
    (ws / "relative_manifest.csv").write_text(header + f"{river},0,River,8,0\n../../outside/secret.npy,0,Forest,1,0\n")
    return ws


EXCEPTION_CASES = [
    # (identifier, inputs, exceptionCode, locator, text)
    ("train_model", [("samples", "data/eurosat_ms"), ("epochs", "abc")], "InvalidParameterValue", "epochs",
     "input epochs: abc is not a valid integer"),
    ("train_model", [("samples", "data/eurosat_ms"), ("epochs", 0)], "InvalidParameterValue", "epochs",
     "input epochs: 0 is not allowed; allowed: from 1 to 500"),
    ("classify_scene", [("model", "data/x.pt"), ("scene", SCENE_99), ("tile_size", 5)], "InvalidParameterValue",
     "tile_size", "input tile_size: 5 is not allowed; allowed: from 64 to 4096"),
    ("extract_samples", [("scene", SCENE_99), ("reference", REFERENCE), ("patch_size", 4)],
     "InvalidParameterValue", "patch_size", "in steps of 2"),
    ("train_model", [("samples", "data/eurosat_ms"), ("device", "gpu")], "InvalidParameterValue", "device",
     "allowed: auto, cpu, cuda"),
    ("extract_samples", [("scene", SCENE_99)], "MissingParameterValue", "reference", ""),
    ("extract_samples", [("scene", "nosuchroot/scene.tif"), ("reference", REFERENCE)], "InvalidParameterValue",
     "scene", "unknown data root nosuchroot"),
    ("extract_samples", [("scene", "data/../etc/passwd"), ("reference", REFERENCE)], "InvalidParameterValue",
     "scene", "path traversal is not allowed"),
    ("validate_classification", [("classification", "/etc/passwd"), ("reference", REFERENCE)],
     "InvalidParameterValue", "classification", "not a server path"),
    ("classify_scene", [("model", "data/eurosat_ms/nosuch.pt"), ("scene", SCENE_99)], "InvalidParameterValue",
     "model", "does not exist"),
    ("extract_samples", [("scene", "workspace/escape.tif"), ("reference", REFERENCE)], "InvalidParameterValue",
     "scene", "leads outside its data root"),
    ("evaluate_model", [("model", "jobs/0123456789abcdef/model.pt"), ("samples", "data/eurosat_ms")],
     "InvalidParameterValue", "model", "no such job"),
    ("extract_samples", [("scene", SCENE_99), ("reference", REFERENCE), ("class_names", "forest")],
     "InvalidParameterValue", "DataInputs", "class_names expects CODE=NAME pairs"),
    ("train_model", [("samples", "data/eurosat_ms"), ("bands", "2,x")], "InvalidParameterValue", "DataInputs",
     "bands expects comma-separated integers"),
    ("compare_classifications", [("classification_a", REFERENCE), ("classification_b", REFERENCE),
                                 ("reference", REFERENCE), ("name_a", "../x")],
     "InvalidParameterValue", "DataInputs", "name_a must be"),
    ("compare_classifications", [("classification_a", REFERENCE), ("classification_b", REFERENCE),
                                 ("reference", REFERENCE), ("name_a", "B")],
     "InvalidParameterValue", "DataInputs", "name_a and name_b must differ"),
    ("no_such_process", [("x", 1)], "InvalidParameterValue", "Identifier", "Unknown process"),
    # the raster's header is read at Execute time for the pixel-count limit (max_input_pixels)
    ("extract_samples", [("scene", "workspace/truncated.tif"), ("reference", REFERENCE)], "InvalidParameterValue",
     "scene", "raster truncated.tif cannot be read as a raster"),
]


@pytest.mark.parametrize("identifier,inputs,code,locator,text", EXCEPTION_CASES,
                         ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(EXCEPTION_CASES)])
def test_bad_inputs_give_an_exception_report(wps, workspace, identifier, inputs, code, locator, text):
    from geoml_hub.wps.jobs.store import store_for

    before = len(store_for(wps.settings.database).list())
    res = execute(wps, identifier, inputs)
    assert res.status_code == 400
    assert res.xml.tag == f"{{{NS['ows']}}}ExceptionReport"
    got_code, got_locator, got_text = res.exception
    assert got_code == code
    assert got_locator == locator
    assert text in got_text
    assert str(wps.settings.state_dir) not in got_text and str(DATA) not in got_text
    assert len(store_for(wps.settings.database).list()) == before  # refused before a job was recorded


FAILURE_CASES = [
    # (identifier, inputs, text of the ProcessFailed message)
    ("balance_samples", [("samples", "workspace/outside_manifest.csv")],
     "manifest outside_manifest.csv lists secret.npy, which lies outside the allowed data roots"),
    ("train_model", [("samples", "workspace/relative_manifest.csv"), ("epochs", 1)],
     "manifest relative_manifest.csv lists secret.npy, which lies outside the allowed data roots"),
    ("balance_samples", [("samples", "workspace/linked_tree")],
     "training-sample tree linked_tree lists stolen.npy, which lies outside the allowed data roots"),
    ("extract_samples", [("scene", "workspace/junk.tif"), ("reference", REFERENCE)],
     "scene file junk.tif is not a GeoTIFF file"),
    ("validate_classification", [("classification", "workspace/junk.tif"), ("reference", REFERENCE)],
     "classification junk.tif is not a GeoTIFF file"),
    ("extract_samples", [("scene", SCENE_99), ("reference", "data/eurosat_ms/Forest/Forest_1031.tif")],
     f"scene {SCENE_99} and reference data/eurosat_ms/Forest/Forest_1031.tif differ in shape: 250x250 vs 64x64"),
]


@pytest.mark.parametrize("identifier,inputs,text", FAILURE_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(FAILURE_CASES)])
def test_bad_data_fails_the_job_with_a_clear_message(wps, workspace, identifier, inputs, text):
    from geoml_hub.wps.jobs.store import FAILED, store_for

    res = execute(wps, identifier, inputs)
    assert res.status_code == 200 and res.failed
    _, _, message = res.exception
    assert text in message
    assert str(wps.settings.state_dir) not in message and str(DATA) not in message
    job = store_for(wps.settings.database).list(limit=1)[0]
    assert job.identifier == identifier and job.state == FAILED and text in job.message
    # a failed job leaves no outputs behind
    out = wps.settings.job_outputs(job.uuid)
    assert not out.exists() or not any(out.iterdir())


def test_model_that_does_not_fit_the_scene_fails_cleanly(wps, eurosat_train):
    res = execute(wps, "classify_scene", [("model", wps.dataset(eurosat_train.refs["model"])), ("scene", SCENE_99),
                                          ("device", "cpu")])
    assert res.status_code == 200 and res.failed
    assert "scene has 8 bands but the model was trained on 13-band samples" in res.exception[2]
    res = execute(wps, "classify_scene", [("model", wps.dataset(eurosat_train.refs["model"])), ("scene", SCENE_99),
                                          ("band_map", "1,2,3,9"), ("device", "cpu")])
    assert res.failed and "band map entries 9 outside the scene" in res.exception[2]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_fails_cleanly(wps, eurosat_balance):
    res = execute(wps, "train_model", [("samples", wps.dataset(eurosat_balance.refs["manifest"])), ("epochs", 1),
                                       ("device", "cuda")])
    assert res.failed and "device cuda requested but PyTorch sees no CUDA GPU" in res.exception[2]


# == what the processes may import ====================================================================================

HEAVY = ("rasterio", "torch", "pycm")
PROCESS_MODULES = sorted(p.stem for p in (REPO / "processes").glob("*.py") if not p.name.startswith("_"))


def test_process_modules_are_the_registered_processes():
    assert sorted(PROCESS_MODULES) == sorted(PROCESS_IDENTIFIERS)


@pytest.mark.parametrize("module", PROCESS_MODULES)
def test_process_modules_do_not_import_heavy_libraries(module):
    tree = ast.parse((REPO / "processes" / f"{module}.py").read_text(encoding="utf-8"))
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            imported.append(node.module or "")
            imported += [f"{node.module}.{a.name}" for a in node.names]
    assert not [m for m in imported if set(m.split(".")) & set(HEAVY)], imported


def test_importing_the_processes_loads_no_heavy_library(tmp_path):
    """Each process module, its instance and a GetCapabilities leave rasterio, torch and pycm unloaded."""
    code = f"""
import importlib, json, sys
heavy = {HEAVY!r}
report = {{}}
for name in {PROCESS_MODULES!r}:
    mod = importlib.import_module("geoml_hub.processes." + name)
    report[name] = [h for h in heavy if h in sys.modules]
from geoml_hub.processes import build_service, load as load_processes
from geoml_hub.wps.settings import Settings
from pywps.tests import client_for
procs = load_processes()
resp = client_for(build_service(Settings(state_dir={str(tmp_path / 'state')!r}, data_roots={{"data": {str(DATA)!r}}}),
                                procs)).get("?service=WPS&request=GetCapabilities&version=1.0.0")
report["capabilities"] = [h for h in heavy if h in sys.modules] + ([] if resp.status_code == 200 else ["failed"])
print(json.dumps(report))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(report) == set(PROCESS_MODULES) | {"capabilities"}
    assert all(v == [] for v in report.values()), report


def test_refused_request_leaves_no_working_directory(wps):
    before = set(wps.settings.work_dir.iterdir())
    res = execute(wps, "train_model", [("samples", "data/eurosat_ms"), ("epochs", 0)])
    assert res.status_code == 400
    assert set(wps.settings.work_dir.iterdir()) == before


# == nothing written outside the jobs =================================================================================

def test_zz_nothing_written_outside_the_job_directories(wps, data_snapshot, data_dir, workspace):
    """Runs last (file order): the data root is unchanged, the workspace holds only what the
    tests put there, the working directories are gone and outputs/ holds only jobs."""
    from geoml_hub.wps.jobs.store import store_for

    assert snapshot(data_dir) == data_snapshot
    assert sorted(p.name for p in workspace.iterdir()) == sorted(
        ["escape.tif", "junk.tif", "truncated.tif", "linked_tree", "outside_manifest.csv", "relative_manifest.csv"])
    assert sorted(p.name for p in (workspace / "linked_tree").rglob("*")) == sorted(
        ["a", "b", "part.npy", "part.npy", "stolen.npy"])
    # sync jobs clean their working directories
    assert not [p for p in wps.settings.work_dir.rglob("*") if not p.is_dir()]
    jobs = {j.uuid for j in store_for(wps.settings.database).list()}
    assert len(jobs) >= 15
    for p in wps.settings.outputs_dir.iterdir():
        assert p.is_dir() and p.name in jobs, p
    allowed = {"logs", "outputs", "work", "workspace", "results", "pywps.cfg", "settings.json", "log.sqlite",
               "log.sqlite-wal", "log.sqlite-shm", "log.sqlite-journal"}
    assert {p.name for p in wps.settings.state_dir.iterdir()} <= allowed


def test_unknown_input_is_refused(wps):
    res = execute(wps, "train_model", [("samples", "data/eurosat_ms"), ("epoch", 2)])
    assert res.status_code == 400
    code, locator, text = res.exception
    assert (code, locator) == ("InvalidParameterValue", "epoch") and "unknown input epoch" in text


def test_extract_samples_from_geojson_polygons_in_the_workspace(wps):
    """Polygons as the web map saves them (GeoJSON in the workspace) give the same samples as the
    label raster they were drawn from, and a reference_labels output."""
    from helpers import chiapas_polygons

    wps.settings.workspace_dir.mkdir(parents=True, exist_ok=True)
    chiapas_polygons(wps.settings.workspace_dir / "chiapas_polygons.geojson")
    res = ok(execute(wps, "extract_samples", [("scene", SCENE_99), ("reference", "workspace/chiapas_polygons.geojson")]))
    assert json.loads(wps.path(res.refs["class_counts"]).read_text()) == {
        "forest": 383, "water": 16, "herbaceous": 145, "barren": 106, "urban": 68}
    assert res.literals["reference_labels"].endswith("/reference_polygons.tif")
    bad = execute(wps, "extract_samples", [("scene", SCENE_99), ("reference", "workspace/chiapas_polygons.geojson"),
                                           ("class_names", "1=a")])
    assert bad.failed and "class_names: leave it out, the polygons name their classes" in bad.exception[2]


def test_chart_schema_lists_the_kubernetes_capable_processes():
    """The chart's enum of wps.jobs.processes is generated from the registry and up to date."""
    from geoml_hub.tools import chartschema
    from geoml_hub.processes import kubernetes_capable

    chart = REPO / "helm" / "geoml-hub"
    schema = json.loads((chart / "values.schema.json").read_text(encoding="utf-8"))
    enum = schema["properties"]["wps"]["properties"]["jobs"]["properties"]["processes"]["items"]["enum"]
    assert enum == list(kubernetes_capable())
    assert (chart / "values.schema.json").read_text(encoding="utf-8") == chartschema.render(chart), (
        f"values.schema.json is out of date: run `{chartschema.REGENERATE}`")
    assert set(kubernetes_capable()) == {"train_model", "classify_scene", "evaluate_model",
                                       "check_compatibility"}


def test_classify_scene_without_confidence_or_check_lists_only_its_outputs(wps, chiapas_train):
    res = ok(execute(wps, "classify_scene", [("model", wps.dataset(chiapas_train.refs["model"])), ("scene", SCENE_99),
                                             ("confidence", "false"), ("compatibility_check", "false"),
                                             ("device", "cpu")]))
    assert {"classification", "class_counts"} <= set(res.refs)
    assert not {"confidence", "compatibility", "compatible"} & (set(res.refs) | set(res.literals))
    assert not (job_dir(wps, res) / "confidence.tif").exists()
