"""Notebook profiles (geoml_hub.hub.profiles) and the spawners that apply them.

The spawners are built with real JupyterHub objects (an in-memory hub database, ``User``,
``Hub``), KubeSpawner as kubespawner's own tests build it (a throw-away kube config, never
contacted). The last test runs a real JupyterHub with GeomlLocalSpawner.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

import geoml_hub
from geoml_hub.hub import profiles as P
from hubtools import _http_error, _pod, run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default_profiles():
    return P.load_profiles()


def write(tmp_path, data, name="profiles.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def cpu(**kw):
    p = {"display_name": "CPU", "slug": "cpu", "default": True, "kubespawner_override": {"cpu_limit": 2}}
    p.update(kw)
    return p


def gpu(**kw):
    p = {"display_name": "GPU", "slug": "gpu", "requires_gpu": True, "allowed_groups": ["gpu-users"],
         "kubespawner_override": {"extra_resource_limits": {"nvidia.com/gpu": "1"}}}
    p.update(kw)
    return p


# ---------------------------------------------------------------------------- the file


def test_default_file_loads(default_profiles):
    profiles = default_profiles
    assert [p["slug"] for p in profiles] == ["cpu", "cuda-gpu"]
    cpu_p, gpu_p = profiles
    assert cpu_p["default"] is True and gpu_p["default"] is False
    assert cpu_p["display_name"] == "CPU" and gpu_p["display_name"] == "CUDA GPU"
    assert cpu_p["allowed_groups"] is None and cpu_p["requires_gpu"] is False
    assert gpu_p["allowed_groups"] == ["gpu-users"] and gpu_p["requires_gpu"] is True
    o = cpu_p["kubespawner_override"]
    assert o["image"] == f"geoml-hub/notebook-cpu:{geoml_hub.__version__}"
    assert (o["cpu_limit"], o["mem_limit"], o["cpu_guarantee"], o["mem_guarantee"]) == (2, "8G", 0.5, "2G")
    assert o["node_affinity_required"][0]["matchExpressions"][0] == {
        "key": "nvidia.com/gpu.present", "operator": "NotIn", "values": ["true"]}
    assert set(cpu_p["profile_options"]["resources"]["choices"]) == {"standard", "large"}
    o = gpu_p["kubespawner_override"]
    assert o["image"] == f"geoml-hub/notebook-cuda:{geoml_hub.__version__}"
    assert o["extra_resource_limits"] == {"nvidia.com/gpu": "1"}
    assert o["node_selector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in o["tolerations"]
    assert o["environment"]["GEOML_DEVICE"] == "cuda"
    # the device plugin sets it to the allocated GPU; "all" would expose the whole node
    assert "NVIDIA_VISIBLE_DEVICES" not in o["environment"]
    # the same list again (already normalised) is valid: configuration may hand it back
    assert P.validate_profiles(profiles) == profiles


def test_importing_the_hub_modules_imports_neither_torch_nor_kubespawner():
    code = ("import sys, geoml_hub.hub, geoml_hub.hub.profiles as p, geoml_hub.hub.spawner; p.load_profiles(); "
            "print(sorted(m for m in ('torch', 'kubespawner') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert out.stdout.strip() == "[]"
    code = "import sys, geoml_hub.hub.profiles; print('jupyterhub' in sys.modules, 'tornado' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert out.stdout.strip() == "False False"


BAD_FILES = [
    ("- display_name: [CPU\n", "not valid YAML (line"),
    ("", "the file is empty: expected a list of profiles"),
    ("cpu: {display_name: CPU}\n", "expected a list of profiles, got a mapping"),
    ("[]\n", "the list of profiles is empty"),
    ([{"display_name": "CPU", "default": True}], "profile 1: slug: missing (required)"),
    ([cpu(slug="CPU large")], "profile 'CPU large': slug: 'CPU large' must be 1-63 lowercase letters"),
    ([cpu(), cpu(default=False)], "profile 'cpu' (item 2): slug: duplicate of item 1"),
    ([cpu(), gpu(default=True)], "default: exactly one profile must have 'default: true'; 2 have (cpu, gpu)"),
    ([cpu(default=False)], "default: exactly one profile must have 'default: true'; none has"),
    ([cpu(default="yes")], "profile 'cpu': default: must be true or false, got 'yes'"),
    ([cpu(allowed_group=["x"])], "profile 'cpu': allowed_group: unknown key (did you mean 'allowed_groups'?)"),
    ([cpu(allowed_groups=[])], "profile 'cpu': allowed_groups: must be a non-empty list"),
    ([cpu(allowed_groups="gpu-users")], "profile 'cpu': allowed_groups: must be a non-empty list"),
    ([cpu(allowed_groups=["a", "a"])], "allowed_groups: lists a group twice"),
    ([cpu(requires_gpu="true")], "profile 'cpu': requires_gpu: must be true or false"),
    ([cpu(kubespawner_override={"environment": {"OMP_NUM_THREADS": 4}})],
     "profile 'cpu': kubespawner_override.environment.OMP_NUM_THREADS: must be a string (quote it in YAML), got 4"),
    ([cpu(kubespawner_override={"mem_limit": "8 GB"})],
     "profile 'cpu': kubespawner_override.mem_limit: '8 GB' must be a byte count or a number with suffix"),
    ([cpu(kubespawner_override={"cpu_limit": -1})],
     "profile 'cpu': kubespawner_override.cpu_limit: -1 must be a positive number of cores"),
    ([cpu(kubespawner_override={"tolerations": {"key": "x"}})], "kubespawner_override.tolerations: must be a list"),
    ([cpu(), gpu(requires_gpu=False)],
     "profile 'gpu': requires_gpu: kubespawner_override.extra_resource_limits asks for nvidia.com/gpu"),
    ([cpu(), gpu(kubespawner_override={"extra_resource_limits": {"nvidia.com/gpu": "one"}})],
     "kubespawner_override.extra_resource_limits.nvidia.com/gpu: 'one' must be a whole number of GPUs"),
    ([cpu(profile_options={"size": {"display_name": "Size"}})],
     "profile 'cpu': profile_options.size.choices: an option needs choices or an enabled unlisted_choice"),
    ([cpu(profile_options={"size": {"display_name": "Size", "choices": {
        "s": {"display_name": "S", "default": True}, "l": {"display_name": "L", "default": True}}}})],
     "profile_options.size.choices: more than one default choice (s, l)"),
    ([cpu(profile_options={"size": {"display_name": "Size", "choices": {"s": {"display_name": "S", "kubespawner": {}}}}})],
     "profile_options.size.choices.s.kubespawner: unknown key (did you mean 'kubespawner_override'?)"),
    ([cpu(profile_options={"image": {"display_name": "Image", "unlisted_choice": {
        "enabled": True, "validation_regex": "^(docker.io/"}}})],
     "profile_options.image.unlisted_choice.validation_regex: not a valid regular expression"),
]


def image_option(**kw):
    """A custom-image option as in the packaged file."""
    o = {"display_name": "Image", "choices": {"std": {"display_name": "Standard", "default": True}},
         "unlisted_choice": {"enabled": True, "display_name": "Custom image",
                             "kubespawner_override": {"image": "{value}"}},
         "allowed_registries": ["registry.example.org/", "docker.io/geoml-hub/"]}
    o.update(kw)
    return o


BAD_FILES += [
    ([cpu(profile_options={"image": image_option(allowed_registries=[])})],
     "profile 'cpu': profile_options.image.allowed_registries: must be a non-empty list of image prefixes "
     "ending in '/'"),
    ([cpu(profile_options={"image": image_option(allowed_registries="registry.example.org/")})],
     "profile_options.image.allowed_registries: must be a non-empty list of image prefixes"),
    ([cpu(profile_options={"image": image_option(allowed_registries=["registry.example.org"])})],
     "profile_options.image.allowed_registries: 'registry.example.org' must be an image prefix ending in '/'"),
    ([cpu(profile_options={"image": image_option(allowed_registries=["https://registry.example.org/"])})],
     "allowed_registries: 'https://registry.example.org/' is not a registry or namespace prefix"),
    ([cpu(profile_options={"image": image_option(allowed_registries=["registry.example.org/team:1/"])})],
     "allowed_registries: 'registry.example.org/team:1/' is not a registry or namespace prefix"),
    ([cpu(profile_options={"image": image_option(allowed_registries=["geoml-hub/", "docker.io/geoml-hub/"])})],
     "allowed_registries: lists a registry twice (docker.io/x/ and x/ are the same)"),
    ([cpu(profile_options={"image": image_option(unlisted_choice={"enabled": False,
                                                                  "kubespawner_override": {"image": "{value}"}})})],
     "allowed_registries: applies to a custom image typed by the user: the option needs an enabled unlisted_choice"),
    ([cpu(profile_options={"image": image_option(unlisted_choice={"enabled": True, "kubespawner_override": {
        "environment": {"X": "{value}"}}})})],
     "with kubespawner_override.image set from '{value}'"),
    ([cpu(profile_options={"image": image_option(allowed_registry=["x/"])})],
     "profile_options.image.allowed_registry: unknown key (did you mean 'allowed_registries'?)"),
    ([cpu(placement="tpu")], "profile 'cpu': placement: 'tpu' must be gpu or cpu"),
    ([cpu(), gpu(requires_gpu=False, kubespawner_override={}, placement="gpu")],
     "profile 'gpu': requires_gpu: placement 'gpu' gives the profile a GPU (nvidia.com/gpu): set 'requires_gpu: true'"),
    ([cpu(kubespawner_override={"environment": {"A": "1", "B": ["x"]}})],
     "profile 'cpu': kubespawner_override.environment.B: must be a string (quote it in YAML), got ['x']"),
    ([cpu(profile_options={"size": {"display_name": "Size", "choices": {"s": {
        "display_name": "S", "kubespawner_override": {"cpu_limit": "two"}}}}})],
     "profile 'cpu': profile_options.size.choices.s.kubespawner_override.cpu_limit: 'two' must be a positive number"),
    ([cpu(profile_options={"Size": {"display_name": "Size", "choices": {"s": {"display_name": "S"}}}})],
     "profile 'cpu': profile_options.Size: the option name must be lowercase letters, digits and '-'"),
    ([cpu(), "gpu"], "profile 2: expected a mapping with display_name, slug, ..., got a string"),
]


@pytest.mark.parametrize("content,message", BAD_FILES, ids=[m.split(":")[0][:40] for _, m in BAD_FILES])
def test_bad_files_give_one_line_errors_naming_file_profile_and_key(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(P.ProfileError) as err:
        P.load_profiles(path)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: "), text
    assert message in text, text


def test_the_schema_is_one_valid_json_schema_file():
    schema = P.profiles_schema()
    assert P.PROFILES_SCHEMA_FILE.name == "profiles.schema.yaml"
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft7Validator.check_schema(schema)
    # every key a profile may have is described there (the chart's values.schema.json embeds it)
    item = schema["items"]
    assert set(item["properties"]) == set(P.KUBESPAWNER_KEYS + P.EXTENSION_KEYS)
    assert all(node.get("description") for node in item["properties"].values())


def test_placement_merges_the_one_declaration():
    from geoml_hub import placement

    gpu_p = P.validate_profiles([cpu(placement="cpu"), gpu(kubespawner_override={}, placement="gpu")])[1]
    o = gpu_p["kubespawner_override"]
    assert o["extra_resource_limits"] == {placement.GPU_RESOURCE: "1"}
    assert o["node_selector"] == placement.gpu_node_selector()
    assert o["tolerations"] == placement.gpu_tolerations()
    # the profile's own settings stay: its GPU count, labels and tolerations
    own = {"extra_resource_limits": {"nvidia.com/gpu": "2"}, "node_selector": {"zone": "a"},
           "tolerations": [{"key": "big", "operator": "Exists"}]}
    both = P.validate_profiles([cpu(), gpu(kubespawner_override=own, placement="gpu")])
    o = both[1]["kubespawner_override"]
    assert o["extra_resource_limits"] == {"nvidia.com/gpu": "2"} and P.gpus_needed(both[1]) == 2
    assert o["node_selector"] == {**placement.gpu_node_selector(), "zone": "a"}
    assert o["tolerations"] == placement.gpu_tolerations() + own["tolerations"]
    assert P.validate_profiles(both) == both   # applying it again adds nothing
    cpu_p = P.validate_profiles([cpu(placement="cpu")])[0]
    assert cpu_p["kubespawner_override"]["node_affinity_required"] == placement.cpu_node_affinity_terms()
    # KubeSpawner never sees the key
    assert "placement" not in P.kubespawner_profile_list([cpu_p])[0]


def test_the_gpu_placement_is_written_once():
    """nvidia.com/gpu... lives in src/geoml_hub/placement.yaml; the profiles, the chart's values
    and the WPS's Kubernetes Jobs take it from there."""
    for path in (P.PROFILES_FILE, REPO / "helm" / "geoml-hub" / "values.yaml",
                 REPO / "helm" / "geoml-hub" / "templates" / "_helpers.tpl"):
        assert "nvidia.com/gpu" not in path.read_text(), path
    from geoml_hub import placement
    from geoml_hub.wps import k8s

    spec = k8s.JobSpec(cpu_image="c", cuda_image="g")
    assert (spec.gpu_resource, spec.gpu_node_selector, spec.gpu_tolerations, spec.cpu_node_affinity) == (
        placement.gpu_resource(), placement.gpu_node_selector(), placement.gpu_tolerations(),
        placement.cpu_node_affinity_terms())
    assert P.GPU_RESOURCE == placement.GPU_RESOURCE == "nvidia.com/gpu"


def test_missing_file(tmp_path):
    with pytest.raises(P.ProfileError, match=r"nope.yaml: cannot read the profiles file"):
        P.load_profiles(tmp_path / "nope.yaml")


def test_a_file_with_options_and_unlisted_choice_loads(tmp_path):
    profiles = P.load_profiles(write(tmp_path, [cpu(description=None, profile_options={"image": {
        "display_name": "Image", "choices": {"std": {"display_name": "Standard"}},
        "unlisted_choice": {"enabled": True, "display_name": "Custom image",
                            "validation_regex": "^registry.example.org/", "validation_message": "our registry only",
                            "kubespawner_override": {"image": "{value}"}}}}), gpu()]))
    assert profiles[0]["description"] == "" and profiles[1]["default"] is False


# ---------------------------------------------------------------------------- groups and submitted options


def test_profiles_for_user_filters_by_group(default_profiles):
    slugs = lambda ps: [(p["slug"], p["default"]) for p in ps]  # noqa: E731
    assert slugs(P.profiles_for_user(default_profiles, [], False)) == [("cpu", True)]
    assert slugs(P.profiles_for_user(default_profiles, ["students"], False)) == [("cpu", True)]
    assert slugs(P.profiles_for_user(default_profiles, ["gpu-users", "x"], False)) == [("cpu", True),
                                                                                       ("cuda-gpu", False)]
    # admins see every profile, unless switched off
    assert slugs(P.profiles_for_user(default_profiles, [], True)) == [("cpu", True), ("cuda-gpu", False)]
    assert slugs(P.profiles_for_user(default_profiles, [], True, admin_sees_all=False)) == [("cpu", True)]
    # a restricted default: outside the group, the first visible profile becomes the default
    profiles = P.validate_profiles([gpu(default=True), cpu(default=False)])
    assert slugs(P.profiles_for_user(profiles, [], False)) == [("cpu", True)]
    assert slugs(P.profiles_for_user(profiles, ["gpu-users"], False)) == [("gpu", True), ("cpu", False)]
    assert P.profiles_for_user(P.validate_profiles([gpu(default=True)]), [], False) == []
    # copies: the caller cannot change the loaded list
    P.profiles_for_user(default_profiles, [], False)[0]["display_name"] = "changed"
    assert default_profiles[0]["display_name"] == "CPU"


def test_check_profile_allowed(default_profiles):
    assert P.check_profile_allowed(default_profiles, "cpu", [])["slug"] == "cpu"
    assert P.check_profile_allowed(default_profiles, "cuda-gpu", ["gpu-users"])["slug"] == "cuda-gpu"
    assert P.check_profile_allowed(default_profiles, "cuda-gpu", [], is_admin=True)["slug"] == "cuda-gpu"
    with pytest.raises(P.ProfileNotAllowed, match=r"'CUDA GPU' \(cuda-gpu\) is only for members of the group "
                                                   r"gpu-users") as err:
        P.check_profile_allowed(default_profiles, "cuda-gpu", ["students"])
    assert err.value.status == 403
    with pytest.raises(P.ProfileNotAllowed):
        P.check_profile_allowed(default_profiles, "cuda-gpu", [], is_admin=True, admin_sees_all=False)
    with pytest.raises(P.ProfileRequestError, match=r"no profile 'tpu': the profiles are 'cpu', 'cuda-gpu'") as err:
        P.check_profile_allowed(default_profiles, "tpu", [])
    assert err.value.status == 400


NO_GPU = P.GpuInfo(False, reason="no GPU: test")
ONE_GPU = P.GpuInfo(True, 1, ("Test GPU",))


def test_select_profile(default_profiles):
    sel = P.select_profile(default_profiles, {}, [], gpu=NO_GPU)
    assert (sel.slug, sel.options) == ("cpu", {"resources": "standard", "image": "geoml-hub"})
    assert sel.override["mem_limit"] == "8G"
    sel = P.select_profile(default_profiles, {"profile": "cpu", "resources": "large"}, [], gpu=NO_GPU)
    assert (sel.override["cpu_limit"], sel.override["mem_limit"]) == (4, "16G")
    assert sel.override["environment"]["GEOML_DEVICE"] == "cpu"  # options merge into, not replace, dicts
    with pytest.raises(P.ProfileRequestError, match=r"option 'Resources' of profile 'cpu': no choice 'huge'; "
                                                    r"the choices are standard, large"):
        P.select_profile(default_profiles, {"profile": "cpu", "resources": "huge"}, [])
    with pytest.raises(P.ProfileRequestError, match="takes no free-form value"):
        P.select_profile(default_profiles, {"profile": "cpu", "resources--unlisted-choice": "x"}, [])
    with pytest.raises(P.ProfileRequestError, match="must be a profile slug"):
        P.select_profile(default_profiles, {"profile": ["cpu"]}, [])
    with pytest.raises(P.ProfileNotAllowed):
        P.select_profile(default_profiles, {"profile": "cuda-gpu"}, ["students"], gpu=ONE_GPU)
    sel = P.select_profile(default_profiles, {"profile": "cuda-gpu"}, ["gpu-users"], gpu=ONE_GPU)
    assert sel.slug == "cuda-gpu"
    with pytest.raises(P.ProfileUnavailable, match=r"'CUDA GPU' \(cuda-gpu\) cannot start here: no GPU: test") as err:
        P.select_profile(default_profiles, {"profile": "cuda-gpu"}, ["gpu-users"], gpu=NO_GPU)
    assert err.value.status == 400
    # gpu=None (Kubernetes): no local GPU check
    assert P.select_profile(default_profiles, {"profile": "cuda-gpu"}, ["gpu-users"]).slug == "cuda-gpu"
    # nothing the user may run
    only_gpu = P.validate_profiles([gpu(default=True)])
    with pytest.raises(P.ProfileNotAllowed, match="no profile is available to bob"):
        P.select_profile(only_gpu, {}, [], username="bob")
    with pytest.raises(P.ProfileUnavailable, match="no profile available to gina can run here: no GPU: test"):
        P.select_profile(only_gpu, {}, ["gpu-users"], gpu=NO_GPU, username="gina")
    # a GPU default the user cannot run here: the first runnable one instead
    gpu_default = P.validate_profiles([gpu(default=True), cpu(default=False)])
    assert P.select_profile(gpu_default, {}, ["gpu-users"], gpu=NO_GPU).slug == "cpu"
    assert P.select_profile(gpu_default, {}, ["gpu-users"], gpu=ONE_GPU).slug == "gpu"


def test_unlisted_choice_is_checked_against_its_regex(tmp_path):
    profiles = P.validate_profiles([cpu(profile_options={"image": {
        "display_name": "Image", "choices": {"std": {"display_name": "Standard", "kubespawner_override": {
            "image": "geoml-hub/notebook-cpu:0.1.0"}}},
        "unlisted_choice": {"enabled": True, "display_name": "Custom image", "validation_regex": r"^registry\.example\.org/",
                            "validation_message": "images from registry.example.org only",
                            "kubespawner_override": {"image": "{value}", "environment": {"IMAGE": "{value}"}}}}})])
    sel = P.select_profile(profiles, {"profile": "cpu", "image--unlisted-choice": "registry.example.org/me/nb:1"}, [])
    assert sel.override["image"] == "registry.example.org/me/nb:1"
    assert sel.override["environment"] == {"IMAGE": "registry.example.org/me/nb:1"}
    assert sel.options == {"image": "registry.example.org/me/nb:1"}
    with pytest.raises(P.ProfileRequestError, match="'docker.io/evil' is refused: images from registry.example.org only"):
        P.select_profile(profiles, {"profile": "cpu", "image--unlisted-choice": "docker.io/evil"}, [])
    with pytest.raises(P.ProfileRequestError, match="type a value for 'Custom image'"):
        P.select_profile(profiles, {"profile": "cpu", "image": "unlisted-choice"}, [])
    assert P.select_profile(profiles, {"profile": "cpu"}, []).override["image"] == "geoml-hub/notebook-cpu:0.1.0"


# ---------------------------------------------------------------------------- custom images


def test_image_references_and_registry_prefixes_are_normalised_as_docker_does():
    assert P.normalize_image("ubuntu:22.04") == "docker.io/library/ubuntu:22.04"
    assert P.normalize_image("geoml-hub/nb:1") == "docker.io/geoml-hub/nb:1"
    assert P.normalize_image("index.docker.io/geoml-hub/nb") == "docker.io/geoml-hub/nb"
    assert P.normalize_image("localhost:5000/a/b@sha256:" + "a" * 64) == "localhost:5000/a/b@sha256:" + "a" * 64
    for bad in ("Foo Bar", "https://registry.example.org/x", "a//b", "a/../b", "x:", "registry.example.org/", "-x",
                "a/b:" + "t" * 129, ""):
        with pytest.raises(ValueError):
            P.normalize_image(bad)
    assert P.normalize_registry_prefix("geoml-hub/") == "docker.io/geoml-hub/"
    assert P.normalize_registry_prefix("docker.io/") == "docker.io/"
    assert P.normalize_registry_prefix("registry.example.org/") == "registry.example.org/"
    assert P.normalize_registry_prefix("localhost:5000/") == "localhost:5000/"
    ok = ["registry.example.org/", "geoml-hub/"]
    assert P.image_allowed("registry.example.org/team/nb:1", ok)
    assert P.image_allowed("docker.io/geoml-hub/nb:1", ok) and P.image_allowed("geoml-hub/nb", ok)
    # a prefix is a whole path component: neither a longer host nor a longer namespace
    for image in ("registry.example.org.evil.com/nb:1", "registry.example.org:5000/nb", "geoml-hubx/nb",
                  "geoml-hub.evil.com/nb", "docker.io/library/ubuntu", "ubuntu", "evil/geoml-hub/nb"):
        assert not P.image_allowed(image, ok), image


def test_the_default_file_has_a_custom_image_option_for_the_project_images(default_profiles):
    option = default_profiles[0]["profile_options"]["image"]
    assert option["allowed_registries"] == ["docker.io/geoml-hub/"]
    assert option["unlisted_choice"]["enabled"] and option["unlisted_choice"]["kubespawner_override"] == {
        "image": "{value}"}
    assert P.is_custom_image_option(option) and not P.is_custom_image_option(
        default_profiles[0]["profile_options"]["resources"])
    # the preset choice keeps the profile's image
    assert P.select_profile(default_profiles, {"profile": "cpu", "image": "geoml-hub"}, []).override["image"] == \
        f"geoml-hub/notebook-cpu:{geoml_hub.__version__}"
    # KubeSpawner gets the option without geoml-hub's key
    plist = P.kubespawner_profile_list(default_profiles)
    assert "allowed_registries" not in plist[0]["profile_options"]["image"]
    assert set(plist[0]["profile_options"]["image"]) <= {"display_name", "choices", "unlisted_choice"}
    assert "allowed_registries" in default_profiles[0]["profile_options"]["image"]  # the input is not changed
    # the form's regex (an HTML pattern) agrees with the grammar on typical values
    regex = option["unlisted_choice"]["validation_regex"]
    for image in ("ubuntu", "geoml-hub/nb:1.0", "docker.io/geoml-hub/my_nb:v1-rc.2", "localhost:5000/a/b:x",
                  "registry.example.org:443/team/nb@sha256:" + "0" * 64, "REG.example.org/a/b"):
        assert __import__("re").match(regex, image) and P.IMAGE_REF_RE.match(image), image
    for image in ("Foo Bar", "geoml-hub/NB", "a//b", "x:", "https://x/y", "geoml-hub/nb:1 ; rm -rf /"):
        assert not __import__("re").match(regex, image), image


def test_the_custom_image_regex_is_a_valid_html_pattern(default_profiles):
    """Browsers compile an input's pattern with the 'v' flag (stricter than Python's re)."""
    node = __import__("shutil").which("node")
    if node is None:
        pytest.skip("node not installed")
    regex = default_profiles[0]["profile_options"]["image"]["unlisted_choice"]["validation_regex"]
    code = ("const p = process.argv[1]; let r; try { r = new RegExp('^(?:' + p + ')$', 'v'); } "
            "catch (e) { if (e instanceof SyntaxError && /flag/i.test(e.message)) "
            "r = new RegExp('^(?:' + p + ')$', 'u'); else throw e; } console.log(JSON.stringify([r.test('docker.io/geoml-hub/nb:1'), r.test('Foo Bar')]));")
    proc = subprocess.run([node, "-e", code, regex], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [True, False]


def test_select_profile_checks_a_custom_image_against_the_allowed_registries(default_profiles):
    def sel(image, profiles=default_profiles, **kw):
        return P.select_profile(profiles, {"profile": "cpu", "image": "unlisted-choice",
                                           "image--unlisted-choice": image}, [], **kw)

    s = sel("docker.io/geoml-hub/my-notebook:1.0")
    assert s.override["image"] == "docker.io/geoml-hub/my-notebook:1.0"
    assert s.options == {"resources": "standard", "image": "docker.io/geoml-hub/my-notebook:1.0"}
    assert s.override["cpu_limit"] == 2  # the profile's settings stay
    assert sel("geoml-hub/my-notebook@sha256:" + "a" * 64).override["image"].endswith("a" * 64)
    # outside the allowed registries: 403, naming them
    for image in ("docker.io/evil/notebook:1", "ubuntu:22.04", "geoml-hub.evil.com/notebook:1",
                  "registry.example.org/geoml-hub/notebook:1"):
        with pytest.raises(P.ProfileNotAllowed) as err:
            sel(image)
        assert err.value.status == 403
        assert str(err.value) == (f"option 'Image' of profile 'cpu': image {image!r} is not from an allowed registry; "
                                  "custom images must come from docker.io/geoml-hub/")
    # malformed: 400, by the option's validation_regex or by the reference grammar behind it
    with pytest.raises(P.ProfileRequestError) as err:
        sel("Foo Bar")
    assert err.value.status == 400 and not isinstance(err.value, P.ProfileNotAllowed)
    assert "'Foo Bar' is refused: An image reference such as docker.io/geoml-hub/my-notebook:1.0" in str(err.value)
    with pytest.raises(P.ProfileRequestError) as err:
        sel("docker.io/geoml-hub/a..b:1")  # passes the (looser) regex, not the grammar
    assert err.value.status == 400 and not isinstance(err.value, P.ProfileNotAllowed)
    assert str(err.value) == ("option 'Image' of profile 'cpu': 'docker.io/geoml-hub/a..b:1' is not a container image "
                              "reference ([registry/]name[:tag][@digest], e.g. docker.io/geoml-hub/notebook:1.0)")
    # several registries, no validation_regex: the grammar alone; the message names them all
    profiles = P.validate_profiles([cpu(profile_options={"image": image_option()})])
    assert sel("registry.example.org/team/nb:2", profiles).override["image"] == "registry.example.org/team/nb:2"
    with pytest.raises(P.ProfileNotAllowed, match=r"custom images must come from registry\.example\.org/ or "
                                                  r"docker\.io/geoml-hub/"):
        sel("quay.io/x/nb:1", profiles)
    with pytest.raises(P.ProfileRequestError, match="is not a container image reference"):
        sel("nb:1 --privileged", profiles)
    # the override may build the image around the value: the resulting image is checked
    profiles = P.validate_profiles([cpu(profile_options={"image": image_option(
        unlisted_choice={"enabled": True, "kubespawner_override": {"image": "registry.example.org/users/{value}"}})})])
    assert sel("me/nb:1", profiles).override["image"] == "registry.example.org/users/me/nb:1"
    # the local spawner runs no containers: 400 before any other check
    for image in ("docker.io/geoml-hub/my-notebook:1.0", "docker.io/evil/nb:1"):
        with pytest.raises(P.ProfileUnavailable) as err:
            sel(image, custom_images=False)
        assert err.value.status == 400
        assert str(err.value) == ("option 'Image' of profile 'cpu': custom images need the Kubernetes spawner: "
                                  "geoml-hub up runs notebook servers as local processes, not containers")
    assert P.select_profile(default_profiles, {"profile": "cpu", "image": "geoml-hub"}, [],
                            custom_images=False).options["image"] == "geoml-hub"


def test_options_from_formdata_matches_kubespawner_field_names():
    form = {"profile": ["cpu"], "profile-option-cpu--resources": ["large"],
            "profile-option-cuda-gpu--resources": ["other"], "profile-option-cpu--image--unlisted-choice": ["x/y"],
            "junk": ["1"]}
    assert P.options_from_formdata(form) == {"profile": "cpu", "resources": "large", "image--unlisted-choice": "x/y"}
    assert P.options_from_formdata({}) == {}


# ---------------------------------------------------------------------------- local settings and GPU


def test_local_settings_cpu(default_profiles):
    s = P.local_settings(P.select_profile(default_profiles, {}, []))
    env = s["environment"]
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["GEOML_DEVICE"] == "cpu" and env["GEOML_PROFILE"] == "cpu"
    assert env["OMP_NUM_THREADS"] == str(min(2, os.cpu_count()))
    assert (s["mem_limit"], s["cpu_limit"], s["mem_guarantee"], s["cpu_guarantee"]) == ("8G", 2, "2G", 0.5)
    assert s["ignored"] == ["image", "node_affinity_required"]
    s = P.local_settings(P.select_profile(default_profiles, {"profile": "cpu", "resources": "large"}, []))
    assert (s["mem_limit"], s["cpu_limit"]) == ("16G", 4)
    # a plain profile works too, and a profile's own OMP_NUM_THREADS wins
    s = P.local_settings(P.validate_profiles([cpu(kubespawner_override={
        "cpu_limit": 1, "environment": {"OMP_NUM_THREADS": "3", "FOO": "bar"}})])[0])
    assert s["environment"]["OMP_NUM_THREADS"] == "3" and s["environment"]["FOO"] == "bar"


def test_local_settings_gpu(default_profiles, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    sel = P.select_profile(default_profiles, {"profile": "cuda-gpu"}, ["gpu-users"], gpu=ONE_GPU)
    s = P.local_settings(sel, ONE_GPU)
    env = s["environment"]
    assert env["CUDA_VISIBLE_DEVICES"] == "0" and env["GEOML_DEVICE"] == "cuda" and env["GEOML_PROFILE"] == "cuda-gpu"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert (s["mem_limit"], s["cpu_limit"]) == ("24G", 4)
    assert s["ignored"] == ["extra_resource_limits", "image", "node_selector", "tolerations"]
    # the hub's own CUDA_VISIBLE_DEVICES: the first N of them
    assert P.local_settings(sel, ONE_GPU, visible_devices="3,5")["environment"]["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert P.local_settings(sel, ONE_GPU)["environment"]["CUDA_VISIBLE_DEVICES"] == "2"
    two = P.validate_profiles([cpu(), gpu(kubespawner_override={"extra_resource_limits": {"nvidia.com/gpu": "2"}})])[1]
    assert P.gpus_needed(two) == 2
    assert P.local_settings(two, visible_devices="3,5,7")["environment"]["CUDA_VISIBLE_DEVICES"] == "3,5"
    assert P.unavailable_reason(two, ONE_GPU) == "needs 2 GPUs, PyTorch sees 1"
    assert P.unavailable_reason(two, P.GpuInfo(True, 2)) is None
    assert P.unavailable_reason(default_profiles[0], NO_GPU) is None


def test_detect_gpu_asks_pytorch_in_a_subprocess_once():
    import torch

    info = P.detect_gpu(refresh=True)
    assert info.available == torch.cuda.is_available()
    if not info.available:
        assert info.reason.startswith("no GPU: PyTorch"), info.reason
    t = time.perf_counter()
    assert P.detect_gpu() is info  # cached
    assert time.perf_counter() - t < 0.05
    broken = P._probe_gpu(sys.executable + "-missing", 5)
    assert not broken.available and "could not run" in broken.reason


# ---------------------------------------------------------------------------- GeomlLocalSpawner


class FormParser(HTMLParser):
    """Inputs, selects/options and texts of the spawn form."""

    def __init__(self, html):
        super().__init__()
        self.radios, self.selects, self.options, self.text = {}, {}, [], []
        self.disabled_options = []
        self._select = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and a.get("type") == "radio":
            self.radios[a["value"]] = {"checked": "checked" in a, "disabled": "disabled" in a, "name": a["name"]}
        elif tag == "select":
            self._select = a["name"]
            self.selects[a["name"]] = {"disabled": "disabled" in a, "selected": None}
        elif tag == "option" and self._select:
            self.options.append((self._select, a["value"]))
            if "disabled" in a:
                self.disabled_options.append((self._select, a["value"]))
            if "selected" in a:
                self.selects[self._select]["selected"] = a["value"]

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None

    def handle_data(self, data):
        if data.strip():
            self.text.append(" ".join(data.split()))


#: a machine with room for every choice of the packaged profiles (the form disables larger ones)
BIG_MACHINE = {"machine_cpus": 64, "machine_memory": 1024**4}


def local_spawner(user, **kw):
    from jupyterhub.objects import Hub

    from geoml_hub.hub.spawner import GeomlLocalSpawner

    kw.setdefault("oauth_client_id", "jupyterhub-user-test")
    return GeomlLocalSpawner(user=user, hub=Hub(), **kw)


def test_form_shows_cpu_and_hides_the_group_restricted_gpu_profile(hub_users):
    sp = local_spawner(hub_users["bob"])
    assert [p["slug"] for p in sp.profile_list] == ["cpu", "cuda-gpu"]
    form = FormParser(run(sp.get_options_form()))
    assert form.radios == {"cpu": {"checked": True, "disabled": False, "name": "profile"}}
    assert "CUDA GPU" not in " ".join(form.text)
    assert form.selects["profile-option-cpu--resources"] == {"disabled": False, "selected": "standard"}
    assert ("profile-option-cpu--resources", "large") in form.options
    assert "PyTorch on CPU cores." in " ".join(form.text)


def test_form_shows_the_gpu_profile_disabled_with_the_reason_where_pytorch_sees_no_gpu(hub_users):
    info = P.detect_gpu()
    for name in ("gina", "ada"):  # the group member and the admin
        form = FormParser(run(local_spawner(hub_users[name]).get_options_form()))
        assert list(form.radios) == ["cpu", "cuda-gpu"]
        assert form.radios["cpu"]["checked"] and not form.radios["cpu"]["disabled"]
        text = " ".join(form.text)
        if info.available:  # on a machine with a GPU, it is offered
            assert not form.radios["cuda-gpu"]["disabled"] and "Not available" not in text
        else:
            assert form.radios["cuda-gpu"] == {"checked": False, "disabled": True, "name": "profile"}
            assert f"Not available: {info.reason}" in text
            assert "CPU-only build" in info.reason or "sees no CUDA device" in info.reason
    # forced either way by configuration
    form = FormParser(run(local_spawner(hub_users["gina"], gpu_available=False).get_options_form()))
    assert form.radios["cuda-gpu"]["disabled"]
    assert "Not available: no GPU: the hub is configured without GPUs (gpu_available = False)" in " ".join(form.text)
    form = FormParser(run(local_spawner(hub_users["gina"], gpu_available=True).get_options_form()))
    assert not form.radios["cuda-gpu"]["disabled"] and form.radios["cpu"]["checked"]


def test_form_preselects_the_saved_options_and_escapes_the_file(hub_users, tmp_path):
    sp = local_spawner(hub_users["gina"], gpu_available=True,
                       user_options={"profile": "cuda-gpu"})
    form = FormParser(run(sp.get_options_form()))
    assert form.radios["cuda-gpu"]["checked"] and not form.radios["cpu"]["checked"]
    sp = local_spawner(hub_users["bob"], user_options={"profile": "cpu", "resources": "large"}, **BIG_MACHINE)
    assert FormParser(run(sp.get_options_form())).selects["profile-option-cpu--resources"]["selected"] == "large"
    # saved options the user may no longer use fall back to the default
    sp = local_spawner(hub_users["bob"], user_options={"profile": "cuda-gpu"})
    assert FormParser(run(sp.get_options_form())).radios == {"cpu": {"checked": True, "disabled": False,
                                                                     "name": "profile"}}
    path = write(tmp_path, [cpu(display_name="<b>CPU</b>", description="<script>alert(1)</script>")])
    html = run(local_spawner(hub_users["bob"], profiles_file=str(path)).get_options_form())
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;CPU&lt;/b&gt;" in html
    # a user with no profile at all gets a message, and a start is refused
    path = write(tmp_path, [gpu(default=True)], "only-gpu.yaml")
    sp = local_spawner(hub_users["bob"], profiles_file=str(path))
    assert "No notebook profile is available to bob" in " ".join(FormParser(run(sp.get_options_form())).text)


def test_form_disables_resource_choices_beyond_the_machine(hub_users):
    """Issue 16.3: a 2-core machine is not offered "4 cores, 16 GB": the choice is shown
    disabled with the reason, and a saved one falls back to the default."""
    small = {"machine_cpus": 2, "machine_memory": 32 * 1024**3}
    sp = local_spawner(hub_users["bob"], user_options={"profile": "cpu", "resources": "large"}, **small)
    html = run(sp.get_options_form())
    form = FormParser(html)
    assert ("profile-option-cpu--resources", "large") in form.disabled_options
    assert ("profile-option-cpu--resources", "standard") not in form.disabled_options
    assert form.selects["profile-option-cpu--resources"]["selected"] == "standard"
    text = " ".join(form.text)
    assert "4 cores, 16 GB memory (not available: needs 4 cores, this machine has 2)" in text
    assert "2 cores and 32.0 GB of memory on this machine: larger choices are not offered." in text
    # memory counts too
    form = FormParser(run(local_spawner(hub_users["bob"], machine_cpus=8, machine_memory=12 * 1024**3)
                          .get_options_form()))
    assert ("profile-option-cpu--resources", "large") in form.disabled_options
    assert "(not available: needs 16 GB of memory, this machine has 12 GB)" in " ".join(form.text)
    # a machine that has them offers every choice
    form = FormParser(run(local_spawner(hub_users["bob"], **BIG_MACHINE).get_options_form()))
    assert ("profile-option-cpu--resources", "large") not in form.disabled_options
    # without settings: this machine's own cores and memory
    here = P.Machine.here()
    form = FormParser(run(local_spawner(hub_users["bob"]).get_options_form()))
    big = here.cpus < 4 or here.memory < 16 * 1024**3
    assert (("profile-option-cpu--resources", "large") in form.disabled_options) == big
    assert P.beyond_machine({"cpu_limit": 4, "mem_limit": "16G"}, P.Machine(4, 16 * 1024**3)) is None
    assert P.parse_bytes("512M") == 512 * 1024**2 and P.parse_bytes("x") is None


def test_form_submission_and_user_options(hub_users):
    sp = local_spawner(hub_users["bob"])
    opts = sp.run_options_from_form({"profile": ["cpu"], "profile-option-cpu--resources": ["large"]})
    assert opts == {"profile": "cpu", "resources": "large"}
    assert sp.options_from_query({"profile": ["cpu"]}) == {"profile": "cpu"}


def test_submitted_disallowed_or_unavailable_profile_is_refused(hub_users):
    sp = local_spawner(hub_users["bob"], user_options={"profile": "cuda-gpu"})
    status, message = _http_error(sp.load_user_options())
    assert status == 403
    assert message == "profile 'CUDA GPU' (cuda-gpu) is only for members of the group gpu-users"
    sp = local_spawner(hub_users["gina"], gpu_available=False, user_options={"profile": "cuda-gpu"})
    status, message = _http_error(sp.load_user_options())
    assert status == 400 and message.startswith("profile 'CUDA GPU' (cuda-gpu) cannot start here: no GPU")
    sp = local_spawner(hub_users["bob"], user_options={"profile": "tpu"})
    assert _http_error(sp.load_user_options())[0] == 400
    sp = local_spawner(hub_users["bob"], user_options={"profile": "cpu", "resources": "huge"})
    assert _http_error(sp.load_user_options())[0] == 400
    # start() checks before anything runs
    sp = local_spawner(hub_users["bob"], user_options={"profile": "cuda-gpu"})
    assert _http_error(sp.start())[0] == 403
    assert sp.pid == 0


def test_local_spawner_shows_the_custom_image_disabled_and_refuses_it(hub_users):
    html = run(local_spawner(hub_users["bob"], **BIG_MACHINE).get_options_form())
    form = FormParser(html)
    assert form.selects["profile-option-cpu--image"] == {"disabled": False, "selected": "geoml-hub"}
    assert ("profile-option-cpu--image", "unlisted-choice") in form.disabled_options
    assert form.disabled_options == [("profile-option-cpu--image", "unlisted-choice")]
    text = " ".join(form.text)
    assert "Custom image... (not available: custom images need the Kubernetes spawner" in text
    assert "Custom image (registry/name:tag): not available here: custom images need the Kubernetes spawner" in text
    assert 'id="profile-option-cpu--image--unlisted-choice"' not in html  # no free-form field
    # the note is help, not an error (issue 16.3): neutral style, not the red "not available" class
    note = re.search(r'<p class="([^"]*)" id="profile-option-cpu--image--unavailable">', html)
    assert note and "geoml-note" in note.group(1).split() and "geoml-unavailable" not in note.group(1).split()
    # submitted anyway (an old form, the REST API): 400 before anything starts
    sp = local_spawner(hub_users["bob"], user_options={"profile": "cpu", "image": "unlisted-choice",
                                                       "image--unlisted-choice": "docker.io/geoml-hub/nb:1"})
    status, message = _http_error(sp.start())
    assert status == 400 and sp.pid == 0
    assert message == ("option 'Image' of profile 'cpu': custom images need the Kubernetes spawner: "
                       "geoml-hub up runs notebook servers as local processes, not containers")
    # such saved options fall back to the default on the form
    assert FormParser(run(sp.get_options_form())).selects["profile-option-cpu--image"]["selected"] == "geoml-hub"
    # the preset choice starts as before
    sp = local_spawner(hub_users["bob"], user_options={"profile": "cpu", "image": "geoml-hub"})
    assert run(sp.load_user_options()).options == {"resources": "standard", "image": "geoml-hub"}


def test_load_user_options_applies_the_profile_and_undoes_the_previous_one(hub_users):
    sp = local_spawner(hub_users["gina"], gpu_available=True, environment={"SITE": "x"}, mem_limit="1G",
                       user_options={"profile": "cuda-gpu"})
    sel = run(sp.load_user_options())
    assert sel.slug == "cuda-gpu" and sp.selected_profile is sel
    env = sp.get_env()
    assert env["GEOML_DEVICE"] == "cuda" and env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert env["SITE"] == "x"
    assert env["MEM_LIMIT"] == str(24 * 1024**3) and env["CPU_LIMIT"] == "4.0"
    assert env["MEM_GUARANTEE"] == str(8 * 1024**3) and env["CPU_GUARANTEE"] == "1.0"
    sp.user_options = {"profile": "cpu"}
    run(sp.load_user_options())
    env = sp.get_env()
    assert env["GEOML_DEVICE"] == "cpu" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert "NVIDIA_DRIVER_CAPABILITIES" not in env and env["SITE"] == "x"
    assert env["MEM_LIMIT"] == str(8 * 1024**3) and env["CPU_LIMIT"] == "2.0"
    # REST API with no options: the user's default profile
    sp.user_options = {}
    assert run(sp.load_user_options()).slug == "cpu"


def test_allow_root_only_as_root(hub_users):
    sp = local_spawner(hub_users["bob"], args=["--debug"])
    expected = ["--debug", "--allow-root"] if os.geteuid() == 0 else ["--debug"]
    assert sp.get_args() == expected
    assert local_spawner(hub_users["bob"], args=["--allow-root"]).get_args() == ["--allow-root"]


ENV_DUMP = r"""
import json, os, sys, time
with open(os.path.join(os.environ["HOME"], "env.json"), "w") as f:
    json.dump({"env": dict(os.environ), "args": sys.argv[1:], "cwd": os.getcwd()}, f)
time.sleep(60)
"""


def test_start_runs_the_process_with_the_profile_environment(hub_users, tmp_path):
    sp = local_spawner(hub_users["bob"], cmd=[sys.executable, "-c", ENV_DUMP],
                       home_dir_template=str(tmp_path / "home-{username}"),
                       user_options={"profile": "cpu", "resources": "large"}, term_timeout=2, kill_timeout=2,
                       interrupt_timeout=1)
    run(sp.start())
    try:
        dump = tmp_path / "home-bob" / "env.json"
        deadline = time.monotonic() + 30
        while not dump.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)
        got = json.loads(dump.read_text())
    finally:
        run(sp.stop(now=True))
    env = got["env"]
    assert env["GEOML_DEVICE"] == "cpu" and env["CUDA_VISIBLE_DEVICES"] == "" and env["GEOML_PROFILE"] == "cpu"
    assert env["MEM_LIMIT"] == str(16 * 1024**3) and env["CPU_LIMIT"] == "4.0"
    assert env["OMP_NUM_THREADS"] == str(min(4, os.cpu_count()))
    assert env["HOME"] == str(tmp_path / "home-bob") and got["cwd"] == str(tmp_path / "home-bob")
    assert env["JUPYTERHUB_USER"] == "bob"


# ---------------------------------------------------------------------------- KubeSpawner


def test_kubespawner_accepts_the_profile_list_and_builds_the_cuda_pod(kube_config, hub_users, default_profiles):
    from kubespawner import KubeSpawner
    from traitlets.config import Config

    plist = P.kubespawner_profile_list(default_profiles)
    assert all(not set(p) - set(P.KUBESPAWNER_KEYS) for p in plist)
    assert "allowed_groups" not in plist[1] and "requires_gpu" not in plist[1]
    c = Config()
    c.KubeSpawner.profile_list = plist
    _, pod = run(_pod(KubeSpawner, hub_users["gina"], {"profile": "cuda-gpu"}, c))
    spec = pod["spec"]
    ctr = spec["containers"][0]
    assert ctr["image"] == f"geoml-hub/notebook-cuda:{geoml_hub.__version__}"
    assert ctr["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert str(ctr["resources"]["limits"]["memory"]) == str(24 * 1024**3)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    env = {e["name"]: e.get("value") for e in ctr["env"]}
    assert env["GEOML_DEVICE"] == "cuda" and env["GEOML_PROFILE"] == "cuda-gpu"
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    # the CPU profile (with its large option): kept off GPU nodes, no GPU asked for
    _, pod = run(_pod(KubeSpawner, hub_users["bob"], {"profile": "cpu", "resources": "large"}, c))
    ctr = pod["spec"]["containers"][0]
    assert ctr["image"] == f"geoml-hub/notebook-cpu:{geoml_hub.__version__}"
    assert "nvidia.com/gpu" not in ctr["resources"]["limits"]
    limits = ctr["resources"]["limits"]
    assert float(limits["cpu"]) == 4 and str(limits["memory"]) == str(16 * 1024**3)
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["operator"] == "NotIn"
    assert {e["name"]: e.get("value") for e in ctr["env"]}["CUDA_VISIBLE_DEVICES"] == ""


def test_geoml_kube_spawner_filters_and_enforces_groups(kube_config, hub_users):
    import geoml_hub.hub.spawner as S
    from traitlets.config import Config

    cls = S.GeomlKubeSpawner
    assert cls is S.GeomlKubeSpawner and cls.__module__ == "geoml_hub.hub.spawner"
    # not allowed: refused with 403 before KubeSpawner applies anything
    from tornado import web

    with pytest.raises(web.HTTPError) as err:
        run(_pod(cls, hub_users["bob"], {"profile": "cuda-gpu"}))
    assert err.value.status_code == 403 and "gpu-users" in err.value.jupyterhub_message
    with pytest.raises(web.HTTPError) as err:
        run(_pod(cls, hub_users["bob"], {"profile": "cpu", "resources": "huge"}))
    assert err.value.status_code == 400
    sp, pod = run(_pod(cls, hub_users["gina"], {"profile": "cuda-gpu"}))
    assert isinstance(sp.profile_list, P.ProfileListForUser)
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    sp, pod = run(_pod(cls, hub_users["ada"], {}))  # REST API, no options: the default
    assert pod["spec"]["containers"][0]["image"].startswith("geoml-hub/notebook-cpu:")

    async def form(user, config=None):
        from jupyterhub.objects import Hub

        sp = cls(config=config or Config(), hub=Hub(), user=user, api_token="x", oauth_client_id="y", _mock=True)
        return await sp.get_options_form()

    html = run(form(hub_users["bob"]))
    assert 'value="cpu"' in html and 'value="cuda-gpu"' not in html
    html = run(form(hub_users["gina"]))
    assert 'value="cpu"' in html and 'value="cuda-gpu"' in html
    # the same YAML handed over as a plain list (z2jh's singleuser.profileList) is wrapped too
    c = Config()
    c.KubeSpawner.profile_list = yaml.safe_load(P.PROFILES_FILE.read_text())
    html = run(form(hub_users["bob"], c))
    assert 'value="cuda-gpu"' not in html
    with pytest.raises(web.HTTPError) as err:
        run(_pod(cls, hub_users["bob"], {"profile": "cuda-gpu"}, c))
    assert err.value.status_code == 403
    # a bad list in configuration fails when the spawner is configured
    c.KubeSpawner.profile_list = [{"display_name": "x"}]
    with pytest.raises(P.ProfileError, match="KubeSpawner.profile_list: profile 1: slug: missing"):
        run(form(hub_users["bob"], c))


def test_geoml_kube_spawner_runs_a_custom_image_from_an_allowed_registry_only(kube_config, hub_users):
    import geoml_hub.hub.spawner as S

    cls = S.GeomlKubeSpawner

    def opts(image):
        return {"profile": "cpu", "image": "unlisted-choice", "image--unlisted-choice": image}

    sp, pod = run(_pod(cls, hub_users["bob"], opts("docker.io/geoml-hub/my-notebook:1.0")))
    ctr = pod["spec"]["containers"][0]
    assert ctr["image"] == "docker.io/geoml-hub/my-notebook:1.0"
    assert float(ctr["resources"]["limits"]["cpu"]) == 2  # still the CPU profile
    assert {e["name"]: e.get("value") for e in ctr["env"]}["GEOML_PROFILE"] == "cpu"
    assert "nvidia.com/gpu" not in ctr["resources"]["limits"]
    # the preset choice: the profile's image
    _, pod = run(_pod(cls, hub_users["bob"], {"profile": "cpu", "image": "geoml-hub"}))
    assert pod["spec"]["containers"][0]["image"] == f"geoml-hub/notebook-cpu:{geoml_hub.__version__}"
    # outside the allowed registries: 403 naming them, before KubeSpawner applies anything
    status, message = _http_error(_pod(cls, hub_users["bob"], opts("docker.io/evil/miner:latest")))
    assert status == 403
    assert message == ("option 'Image' of profile 'cpu': image 'docker.io/evil/miner:latest' is not from an allowed "
                       "registry; custom images must come from docker.io/geoml-hub/")
    assert _http_error(_pod(cls, hub_users["ada"], opts("quay.io/geoml-hub/nb:1")))[0] == 403  # admins too
    # malformed: 400
    status, message = _http_error(_pod(cls, hub_users["bob"], opts("docker.io/geoml-hub/NB:1")))
    assert status == 400 and "is refused" in message
    # the form KubeSpawner renders offers the free-form field with the regex as its pattern, and no
    # trace of allowed_registries
    from jupyterhub.objects import Hub
    from traitlets.config import Config

    async def form():
        sp = cls(config=Config(), hub=Hub(), user=hub_users["bob"], api_token="x", oauth_client_id="y", _mock=True)
        return await sp.get_options_form()

    html = run(form())
    assert 'id="profile-option-cpu--image--unlisted-choice"' in html and "pattern=" in html
    assert "allowed_registries" not in html


def test_plain_kubespawner_with_the_callable_and_pre_spawn_check(kube_config, hub_users, default_profiles):
    from kubespawner import KubeSpawner
    from tornado import web
    from traitlets.config import Config

    c = Config()
    c.KubeSpawner.profile_list = P.ProfileListForUser(default_profiles)
    c.KubeSpawner.pre_spawn_hook = P.kubespawner_check_user_options
    from jupyterhub.objects import Hub

    async def check():
        sp = KubeSpawner(config=c, hub=Hub(), user=hub_users["bob"], api_token="x", oauth_client_id="y", _mock=True)
        sp.user_options = {"profile": "cuda-gpu"}
        with pytest.raises(web.HTTPError) as err:
            sp.run_pre_spawn_hook()
        assert err.value.status_code == 403
        assert 'value="cuda-gpu"' not in await sp.get_options_form()
        sp.user_options = {"profile": "cpu"}
        assert sp.run_pre_spawn_hook().slug == "cpu"

    run(check())


# ---------------------------------------------------------------------------- a real JupyterHub


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HUB_CONFIG = """
c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.JupyterHub.db_url = "sqlite:///{tmp}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{tmp}/cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "geoml_hub.hub.spawner.GeomlLocalSpawner"
c.GeomlLocalSpawner.home_dir_template = "{tmp}/home/{{username}}"
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.start_timeout = 90
c.Spawner.http_timeout = 90
c.JupyterHub.load_groups = {{"gpu-users": {{"users": ["gina"]}}}}
c.JupyterHub.services = [{{"name": "tester", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "tester", "services": ["tester"],
                             "scopes": ["admin:users", "admin:servers", "admin:server_state", "tokens", "groups"]}}]
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_real_hub_offers_checks_and_applies_profiles(tmp_path):
    """JupyterHub 6 + GeomlLocalSpawner + configurable-http-proxy: the form per user, a
    refused GPU profile (form and REST API), and a CPU server started with its environment."""
    requests = pytest.importorskip("requests")
    chp = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
    if not chp.exists():
        pytest.skip("configurable-http-proxy not installed (npm install in the repository)")
    bindir = Path(sys.executable).parent
    ports = dict(port=_free_port(), hub_port=_free_port(), api_port=_free_port())
    token = "tester-" + os.urandom(8).hex()
    (tmp_path / "jupyterhub_config.py").write_text(HUB_CONFIG.format(
        tmp=tmp_path, chp=str(chp), singleuser=str(bindir / "jupyterhub-singleuser"), token=token, **ports))
    env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    log = open(tmp_path / "hub.log", "w")
    hub = subprocess.Popen([str(bindir / "jupyterhub"), "-f", str(tmp_path / "jupyterhub_config.py")],
                           cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{ports['port']}/hub"
    api = requests.Session()
    api.headers["Authorization"] = f"token {token}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert hub.poll() is None, (tmp_path / "hub.log").read_text()[-3000:]
            try:
                if api.get(f"{base}/api/", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "hub not ready in 60 s"
            time.sleep(0.3)
        sessions = {}
        for name in ("bob", "gina"):
            r = api.post(f"{base}/api/users/{name}")
            assert r.status_code in (201, 409), r.text
            s = requests.Session()  # form login (pages take no API token)
            s.get(f"{base}/login")
            r = s.post(f"{base}/login", data={"username": name, "password": "x", "_xsrf": s.cookies["_xsrf"]},
                       allow_redirects=False)
            assert r.status_code == 302, r.text[-2000:]
            sessions[name] = s

        def spawn_form(name, data):
            s = sessions[name]
            return s.post(f"{base}/spawn", data={**data, "_xsrf": s.cookies["_xsrf"]}, allow_redirects=False)

        # the forms: bob has no GPU profile; gina has it, disabled here without a GPU
        bob_form = FormParser(sessions["bob"].get(f"{base}/spawn").text)
        assert list(bob_form.radios) == ["cpu"] and bob_form.radios["cpu"]["checked"]
        gina_form = FormParser(sessions["gina"].get(f"{base}/spawn").text)
        assert list(gina_form.radios) == ["cpu", "cuda-gpu"]
        info = P.detect_gpu()
        assert gina_form.radios["cuda-gpu"]["disabled"] == (not info.available)

        # REST API and form: bob may not start the GPU profile
        r = api.post(f"{base}/api/users/bob/server", json={"profile": "cuda-gpu"})
        assert r.status_code == 403, r.text
        assert r.json()["message"] == "profile 'CUDA GPU' (cuda-gpu) is only for members of the group gpu-users"
        r = spawn_form("bob", {"profile": "cuda-gpu"})
        assert r.status_code == 403, r.text[-2000:]
        assert "Error: profile &#39;CUDA GPU&#39; (cuda-gpu) is only for members of the group gpu-users" in r.text
        if not info.available:
            r = api.post(f"{base}/api/users/gina/server", json={"profile": "cuda-gpu"})
            assert r.status_code == 400 and "cannot start here: no GPU" in r.json()["message"], r.text

        # bob starts the CPU profile with the large option through the form
        r = spawn_form("bob", {"profile": "cpu", "profile-option-cpu--resources": "large"})
        assert r.status_code == 302, r.text[-2000:]
        deadline = time.monotonic() + 90
        while True:
            model = api.get(f"{base}/api/users/bob").json()
            server = model["servers"].get("")
            if server and server["ready"]:
                break
            assert time.monotonic() < deadline, (tmp_path / "hub.log").read_text()[-3000:]
            time.sleep(0.5)
        assert server["user_options"] == {"profile": "cpu", "resources": "large"}
        pid = server["state"]["pid"]
        environ = dict(item.split("=", 1) for item in
                       Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in item)
        assert environ["GEOML_DEVICE"] == "cpu" and environ["CUDA_VISIBLE_DEVICES"] == ""
        assert environ["GEOML_PROFILE"] == "cpu" and environ["MEM_LIMIT"] == str(16 * 1024**3)
        assert environ["CPU_LIMIT"] == "4.0" and environ["HOME"] == str(tmp_path / "home" / "bob")
        r = api.delete(f"{base}/api/users/bob/server")
        assert r.status_code in (202, 204), r.text
    finally:
        hub.terminate()
        try:
            hub.wait(30)
        except subprocess.TimeoutExpired:
            hub.kill()
            hub.wait()
        log.close()
