"""The Helm chart helm/geoml-hub, with the real helm binary (.ci/install-helm.sh) and
kubernetes-validate: lint, render, strict validation and the chart's security content."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from geoml_hub import __version__

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "geoml-hub"
HELM = ROOT / ".ci" / "bin" / "helm"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
METADATA_IP = "169.254.169.254/32"

if not HELM.exists():  # the README's test command installs it; a missing tool is a failure, not a skip
    raise RuntimeError(f"no helm binary at {HELM}: run bash .ci/install-helm.sh")

import kubernetes_validate as kv  # noqa: E402  (test extra)
from kubernetes_validate import utils as kv_utils  # noqa: E402

K8S_VERSIONS = ["1.30.0", kv_utils.latest_version()]
VALUES = {"default": [], "all-on": ["-f", str(ALL_ON)]}


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(home / var.lower())
    return env


def helm(env, *args, check=True):
    proc = subprocess.run([str(HELM), *args], env=env, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def rendered(helm_env):
    out = {}
    for name, args in VALUES.items():
        text = helm(helm_env, "template", "geoml", str(CHART), "--namespace", "geoml",
                    "--kube-version", "1.30.0", *args).stdout
        out[name] = [d for d in yaml.safe_load_all(text) if d]
    return out


def find(docs, kind, component=None):
    return [d for d in docs if d["kind"] == kind and (
        component is None or d["metadata"]["labels"].get("app.kubernetes.io/component") == component)]


@pytest.mark.parametrize("values", sorted(VALUES))
def test_lint_strict(helm_env, values):
    proc = helm(helm_env, "lint", "--strict", str(CHART), *VALUES[values])
    assert "0 chart(s) failed" in proc.stdout


def test_schema_rejects_bad_values(helm_env):
    for bad in ("hub.replicas=abc", "hub.replicas=2", "singleuser.storage.type=nfs", "wps.unknownOption=1",
                "map.unknownOption=1", "map.port=abc", "map.service.type=Headless"):
        proc = helm(helm_env, "lint", "--strict", str(CHART), "--set", bad, check=False)
        assert proc.returncode != 0, bad
        assert "schema" in (proc.stdout + proc.stderr).lower(), (bad, proc.stdout, proc.stderr)


def test_schema_checks_the_custom_image_option(helm_env, tmp_path):
    """values.schema.json mirrors profiles.py for profile options: allowed_registries is a
    non-empty list of prefixes ending in '/', and option keys are the known ones."""
    default = yaml.safe_load((CHART / "files" / "profiles.yaml").read_text())

    def lint(mutate):
        profiles = json.loads(json.dumps(default))
        mutate(profiles[0]["profile_options"]["image"])
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump({"singleuser": {"profileList": profiles}}))
        return helm(helm_env, "lint", "--strict", str(CHART), "-f", str(path), check=False)

    assert lint(lambda o: o.update(allowed_registries=["registry.example.org/", "geoml-hub/"])).returncode == 0
    for bad in ({"allowed_registries": []}, {"allowed_registries": ["registry.example.org"]},
                {"allowed_registries": "registry.example.org/"}, {"allowed_registry": ["x/"]}):
        proc = lint(lambda o, b=bad: o.update(b))
        assert proc.returncode != 0, bad
        assert "schema" in (proc.stdout + proc.stderr).lower(), (bad, proc.stdout, proc.stderr)


def test_every_value_is_described():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node, value, path):
        assert node.get("description"), f"{path}: no description"
        assert node.get("type"), f"{path}: no type"
        if isinstance(value, dict) and "properties" in node:
            assert set(value) == set(node["properties"]), path
            for k, v in value.items():
                walk(node["properties"][k], v, f"{path}.{k}")

    walk(schema, values, "values")


@pytest.mark.parametrize("values", sorted(VALUES))
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_strictly(rendered, values, version):
    docs = rendered[values]
    assert len(docs) > 15
    for doc in docs:
        try:
            kv.validate(doc, version, strict=True)
        except kv_utils.ValidationError as exc:  # pragma: no cover - the failure message
            raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']} ({version}): {exc}") from None


def test_complete_installation(rendered):
    docs = rendered["all-on"]
    kinds = {(d["kind"], d["metadata"]["labels"]["app.kubernetes.io/component"]) for d in docs}
    for needed in [("Deployment", "hub"), ("Deployment", "proxy"), ("Deployment", "wps"), ("Deployment", "map"),
                   ("Service", "map"), ("ServiceAccount", "map"), ("NetworkPolicy", "map"),
                   ("StatefulSet", "postgresql"), ("Ingress", "proxy"), ("PersistentVolumeClaim", "hub"),
                   ("PersistentVolumeClaim", "wps"), ("PersistentVolumeClaim", "results"),
                   ("ConfigMap", "wps"), ("Secret", "postgresql"), ("Service", "proxy")]:
        assert needed in kinds, needed
    ingress = find(docs, "Ingress")[0]
    assert ingress["spec"]["tls"] == [{"secretName": "geoml-hub-tls", "hosts": ["hub.example.org"]}]


def _rules(role):
    return sorted((tuple(r["apiGroups"]), tuple(sorted(r["resources"])), tuple(sorted(r["verbs"])))
                  for r in role["rules"])


@pytest.mark.parametrize("values", sorted(VALUES))
def test_rbac_least_privilege(rendered, values):
    docs = rendered[values]
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    hub = find(docs, "Role", "hub")[0]
    assert _rules(hub) == sorted([
        (("",), ("persistentvolumeclaims", "pods"), ("create", "delete", "get", "list", "watch")),
        (("",), ("events",), ("get", "list", "watch")),
    ])
    wps = find(docs, "Role", "wps")[0]
    assert _rules(wps) == sorted([
        (("batch",), ("jobs",), ("create", "delete", "get", "list", "watch")),
        (("",), ("pods",), ("get", "list", "watch")),
        (("",), ("pods/log",), ("get",)),
    ])
    for binding in find(docs, "RoleBinding"):
        component = binding["metadata"]["labels"]["app.kubernetes.io/component"]
        sa = find(docs, "ServiceAccount", component)[0]["metadata"]["name"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "geoml"}]
        assert binding["roleRef"]["kind"] == "Role"
    deployments = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in find(docs, "Deployment")}
    assert deployments["hub"]["spec"]["template"]["spec"]["serviceAccountName"] == hub["metadata"]["name"]
    assert deployments["wps"]["spec"]["template"]["spec"]["serviceAccountName"] == wps["metadata"]["name"]
    # the map: its own ServiceAccount, no Role, no API token
    assert not find(docs, "Role", "map") and not find(docs, "RoleBinding", "map")
    (map_sa,) = find(docs, "ServiceAccount", "map")
    assert map_sa["automountServiceAccountToken"] is False
    map_pod = deployments["map"]["spec"]["template"]["spec"]
    assert map_pod["serviceAccountName"] == map_sa["metadata"]["name"]
    assert map_pod["automountServiceAccountToken"] is False


def _egress_cidrs(policy):
    for rule in policy["spec"].get("egress", []):
        for peer in rule.get("to", []):
            if "ipBlock" in peer:
                yield peer["ipBlock"]


@pytest.mark.parametrize("values", sorted(VALUES))
def test_network_policies(rendered, values):
    docs = rendered[values]
    policies = {p["metadata"]["labels"]["app.kubernetes.io/component"]: p for p in find(docs, "NetworkPolicy")}
    assert {"hub", "proxy", "singleuser-server", "wps", "postgresql", "map"} <= set(policies)
    assert ("wps-job" in policies) == (values == "all-on")   # with the Job backend only
    for name, policy in policies.items():
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}, name
        for block in _egress_cidrs(policy):   # every open egress excludes the metadata address
            assert block["cidr"] == "0.0.0.0/0" and METADATA_IP in block["except"], name
    user = policies["singleuser-server"]["spec"]
    reached = {tuple(sorted(peer["podSelector"]["matchLabels"].items()))
               for rule in user["egress"] for peer in rule.get("to", []) if "podSelector" in peer
               and "namespaceSelector" not in peer}
    components = {dict(r)["app.kubernetes.io/component"] for r in reached}
    assert components == {"hub", "proxy", "wps"}
    # the WPS accepts traffic from the proxy, user servers, hub and map only; PostgreSQL from the WPS only
    froms = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
             for rule in policies["wps"]["spec"]["ingress"] for peer in rule["from"]}
    assert froms == {"proxy", "singleuser-server", "hub", "map"}
    # the hub API accepts the map (token checks, OAuth); the proxy forwards /services/map to it
    hub_from = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                for rule in policies["hub"]["spec"]["ingress"] for peer in rule["from"]}
    assert hub_from == {"proxy", "singleuser-server", "wps", "map"}
    proxy_to = {(peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"], p["port"])
                for rule in policies["proxy"]["spec"]["egress"] for peer in rule.get("to", [])
                for p in rule["ports"] if "podSelector" in peer and "namespaceSelector" not in peer}
    assert ("map", 5100) in proxy_to
    # the map: reached by the proxy only, on its port; reaches the hub API, the WPS and DNS, nothing else
    mp = policies["map"]["spec"]
    assert [({peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in rule["from"]},
             [p["port"] for p in rule["ports"]]) for rule in mp["ingress"]] == [({"proxy"}, [5100])]
    assert not list(_egress_cidrs(policies["map"]))
    map_to = {(peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"], tuple(p["port"] for p in rule["ports"]))
              for rule in mp["egress"] for peer in rule.get("to", []) if "namespaceSelector" not in peer}
    assert map_to == {("hub", (8081,)), ("wps", (5000,))}
    dns = [rule for rule in mp["egress"] if any("namespaceSelector" in peer for peer in rule.get("to", []))]
    assert len(dns) == 1 and {p["port"] for p in dns[0]["ports"]} == {53}
    assert len(mp["egress"]) == 3
    pg_from = [peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
               for rule in policies["postgresql"]["spec"]["ingress"] for peer in rule["from"]]
    assert pg_from == (["wps", "wps-job"] if values == "all-on" else ["wps"])
    if "wps-job" in policies:   # job pods: reached by nobody, reach neither the hub nor the API server
        job = policies["wps-job"]["spec"]
        assert job["ingress"] == []
        reached = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                   for rule in job["egress"] for peer in rule.get("to", []) if "podSelector" in peer
                   and "namespaceSelector" not in peer}
        assert reached == {"postgresql"}
        ports = {p["port"] for rule in job["egress"] for p in rule.get("ports", [])}
        assert ports == {53, 80, 443, 5432}   # DNS, URL inputs, the job database
    if values == "all-on":   # no internet egress for user pods: no ipBlock at all
        assert not list(_egress_cidrs(policies["singleuser-server"]))


def _hub_settings(docs):
    cm = find(docs, "ConfigMap", "hub")
    cm = [c for c in cm if "jupyterhub_config.py" in c["data"]][0]
    return cm["data"], json.loads(cm["data"]["values.json"])


@pytest.mark.parametrize("values", sorted(VALUES))
def test_hub_config_uses_profiles(rendered, values):
    docs = rendered[values]
    data, settings = _hub_settings(docs)
    config = data["jupyterhub_config.py"]
    compile(config, "jupyterhub_config.py", "exec")
    assert 'c.JupyterHub.spawner_class = "geoml_hub.hub.spawner.GeomlKubeSpawner"' in config
    assert "c.GeomlKubeSpawner.profiles_file" in config
    profiles_cm = [c for c in find(docs, "ConfigMap", "hub") if "profiles.yaml" in c["data"]][0]
    from geoml_hub.hub.profiles import PROFILES_FILE, validate_profiles

    # singleuser.profileList is empty by default: the chart renders the one profiles file of
    # geoml-hub (files/profiles.yaml links to the package's), comments and all
    assert yaml.safe_load(CHART.joinpath("values.yaml").read_text())["singleuser"]["profileList"] == []
    assert (CHART / "files" / "profiles.yaml").resolve() == PROFILES_FILE
    assert profiles_cm["data"]["profiles.yaml"].strip() == PROFILES_FILE.read_text().strip()
    validate_profiles(yaml.safe_load(profiles_cm["data"]["profiles.yaml"]), source="chart")
    # the hub mounts that ConfigMap where profiles_file points
    hub = find(docs, "Deployment", "hub")[0]["spec"]["template"]["spec"]
    mount = [m for m in hub["containers"][0]["volumeMounts"] if m["name"] == "profiles"][0]
    assert settings["profilesFile"] == mount["mountPath"] + "/profiles.yaml"
    # user pods: memory-backed /dev/shm, read-only shared volumes
    shm = [v for v in settings["volumes"] if v["name"] == "dshm"][0]
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in settings["volumeMounts"]
    for m in settings["volumeMounts"]:
        if m["name"].startswith("geoml-"):
            assert m["readOnly"] is True


def test_hub_config_runs(rendered, tmp_path, monkeypatch):
    """The rendered jupyterhub_config.py loads in a traitlets Config (the hub's own loader)."""
    pytest.importorskip("kubespawner")
    from traitlets.config.loader import PyFileConfigLoader

    monkeypatch.setenv("GEOML_WPS_API_TOKEN", "not-a-real-token")   # from the hub Secret in the pod
    monkeypatch.setenv("GEOML_MAP_API_TOKEN", "not-a-real-map-token")
    data, settings = _hub_settings(rendered["default"])
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    config = PyFileConfigLoader("jupyterhub_config.py", path=str(tmp_path)).load_config()
    assert config.JupyterHub.spawner_class == "geoml_hub.hub.spawner.GeomlKubeSpawner"
    services = {s["name"]: s for s in config.JupyterHub.services}
    assert set(services) == {"wps", "map", "idle-culler"}
    # the map as `geoml-hub up` registers it: its users' OAuth tokens may call the WPS
    m = services["map"]
    assert m["oauth_client_allowed_scopes"] == ["access:services!service=wps"]
    assert m["oauth_no_confirm"] is True and m["display"] is True
    assert m["api_token"] == "not-a-real-map-token" != services["wps"]["api_token"]
    docs = rendered["default"]
    (svc,) = find(docs, "Service", "map")
    assert m["url"] == f"http://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}"
    # the hub gets the map's token from the key the map pod reads
    hub = find(docs, "Deployment", "hub")[0]["spec"]["template"]["spec"]["containers"][0]
    map_ctr = find(docs, "Deployment", "map")[0]["spec"]["template"]["spec"]["containers"][0]
    key = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in hub["env"]}["GEOML_MAP_API_TOKEN"]
    assert key == {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in map_ctr["env"]}["JUPYTERHUB_API_TOKEN"]
    (secret,) = [s for s in find(docs, "Secret", "hub")]
    assert key["name"] == secret["metadata"]["name"] and key["key"] == "map-api-token"
    assert secret["data"]["map-api-token"] and secret["data"]["map-api-token"] != secret["data"]["wps-api-token"]


@pytest.mark.parametrize("values", sorted(VALUES))
def test_pods_non_root_with_resources(rendered, values):
    for doc in rendered[values]:
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        spec = doc["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        assert spec["securityContext"]["runAsUser"] > 0
        for c in spec["containers"]:
            assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


# -- the web map ---------------------------------------------------------------------------------
def _map_container(docs):
    (dep,) = find(docs, "Deployment", "map")
    return dep["spec"]["template"]["spec"], dep["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("values", sorted(VALUES))
def test_map_deployment(rendered, values):
    """geoml-hub map serve as the hub service `map`: flags the real CLI accepts, the WPS in the
    cluster at the path it strips, the data read-only, writable /tmp and cache only."""
    from urllib.parse import urlparse

    from geoml_hub.cli import build_parser

    docs = rendered[values]
    pod, ctr = _map_container(docs)
    assert ctr["command"][:3] == ["geoml-hub", "map", "serve"]
    args = build_parser().parse_args(ctr["command"][1:])   # the real CLI parses them
    assert (args.auth, args.host, args.port) == ("jupyterhub", "0.0.0.0", 5100)
    base = "/geoml" if values == "all-on" else ""
    public = "https://hub.example.org/geoml" if values == "all-on" else \
        "http://geoml-geoml-hub-proxy-public.geoml.svc:80"
    assert args.url == f"{public}/services/map"
    # the WPS: its Service in the cluster, with the path the WPS strips (its public URL's path)
    wps_svc = find(docs, "Service", "wps")[0]["metadata"]["name"]
    ini = _wps_config(docs)["wps.ini"]
    wps_public = [line.split(" = ", 1)[1] for line in ini.splitlines() if line.startswith("url = ")][0]
    assert args.wps_public_url == wps_public == f"{public}/services/wps"
    assert args.wps_url == f"http://{wps_svc}:5000{urlparse(wps_public).path}" == \
        f"http://{wps_svc}:5000{base}/services/wps"
    # the shared data as the WPS's data root "data", read-only; only when enabled
    mounts = {m["name"]: m for m in ctr["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    if values == "all-on":
        assert args.data_root == ["data=/srv/geoml/data"]
        assert "data_roots = data=/srv/geoml/data" in ini
        assert mounts["geoml-data"]["readOnly"] is True and mounts["geoml-data"]["mountPath"] == "/srv/geoml/data"
        assert volumes["geoml-data"]["nfs"]["readOnly"] is True
        assert args.basemap_url == "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
        assert "OpenStreetMap" in args.basemap_attribution
        assert args.workers == 4 and volumes["cache"]["emptyDir"] == {"sizeLimit": "10Gi"}
    else:
        assert args.data_root is None and "geoml-data" not in mounts
        assert args.basemap_url == "" and args.basemap_attribution == ""   # none: works offline
        assert volumes["cache"]["emptyDir"] == {"sizeLimit": "5Gi"}
    # read-only root file system: /tmp and the cache are emptyDirs, nothing else is writable
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in volumes["tmp"]
    assert mounts["cache"]["mountPath"] == args.cache_dir
    for name, m in mounts.items():
        assert m.get("readOnly") is True or "emptyDir" in volumes[name], name
    # the hub's service environment (jupyterhub.services.auth.HubOAuth)
    env = {e["name"]: e.get("value") for e in ctr["env"]}
    hub_svc = find(docs, "Service", "hub")[0]["metadata"]["name"]
    assert env["JUPYTERHUB_SERVICE_NAME"] == "map" and env["JUPYTERHUB_CLIENT_ID"] == "service-map"
    assert env["JUPYTERHUB_API_URL"] == f"http://{hub_svc}:8081{base}/hub/api"
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == f"{base}/services/map/"
    assert env["JUPYTERHUB_OAUTH_CALLBACK_URL"] == f"{base}/services/map/oauth_callback"
    assert env["JUPYTERHUB_BASE_URL"] == f"{base}/"
    assert env["JUPYTERHUB_PUBLIC_HUB_URL"] == public
    assert "GEOML_MAP_VENDOR" not in env   # the image's
    # probes on /health under the map's path (answered without a login)
    for probe in ("readinessProbe", "livenessProbe"):
        assert ctr[probe]["httpGet"] == {"path": f"{urlparse(args.url).path}/health", "port": "http"}
    assert ctr["ports"] == [{"name": "http", "containerPort": 5100, "protocol": "TCP"}]
    # the WPS image (with a registry prefix in all-on), which carries Leaflet
    wps_image = find(docs, "Deployment", "wps")[0]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert ctr["image"] == wps_image == (f"registry.example.org/geoml/geoml-hub/wps:{__version__}"
                                         if values == "all-on" else f"geoml-hub/wps:{__version__}")


def test_map_image_override(helm_env):
    def image(*flags):
        text = helm(helm_env, "template", "geoml", str(CHART), "--show-only", "templates/map/deployment.yaml",
                    *flags).stdout
        return yaml.safe_load(text)["spec"]["template"]["spec"]["containers"][0]["image"]

    assert image("--set", "wps.image.tag=1.2.3") == "geoml-hub/wps:1.2.3"
    assert image("--set", "wps.image.tag=1.2.3", "--set", "map.image.tag=1.2.4") == "geoml-hub/wps:1.2.4"
    assert image("--set", "map.image.name=example.org/map") == f"example.org/map:{__version__}"


def test_map_answers_health_on_the_probed_path(rendered, tmp_path, monkeypatch):
    """The rendered map command builds a MapApp whose /health is the probes' path."""
    from werkzeug.test import Client

    from geoml_hub.cli import build_parser
    from geoml_hub.map.app import MapApp, MapSettings

    vendor = tmp_path / "node_modules"
    (vendor / "leaflet" / "dist").mkdir(parents=True)
    (vendor / "leaflet" / "dist" / "leaflet.js").write_text("")
    (vendor / "leaflet-draw" / "dist").mkdir(parents=True)
    pod, ctr = _map_container(rendered["all-on"])
    args = build_parser().parse_args(ctr["command"][1:])
    settings = MapSettings(url=args.url, wps_url=args.wps_url, wps_public_url=args.wps_public_url,
                           auth="none", cache_dir=tmp_path / "cache", vendor=vendor)
    client = Client(MapApp(settings))
    resp = client.get(ctr["readinessProbe"]["httpGet"]["path"])
    assert resp.status_code == 200 and resp.get_json() == {"status": "ok"}


def test_map_needs_the_wps(helm_env):
    """Without the WPS (or with map.enabled false) nothing of the map is rendered, and the hub
    does not register it (its scopes name the WPS service)."""
    for flags in (["--set", "map.enabled=false"], ["--set", "wps.enabled=false"]):
        text = helm(helm_env, "template", "geoml", str(CHART), "--namespace", "geoml", *flags).stdout
        docs = [d for d in yaml.safe_load_all(text) if d]
        assert not [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "map"], flags
        _, settings = _hub_settings(docs)
        assert settings["map"]["enabled"] is False
        for policy in find(docs, "NetworkPolicy"):
            text = json.dumps(policy["spec"])
            assert '"app.kubernetes.io/component": "map"' not in text, (flags, policy["metadata"]["name"])


def test_map_image_carries_leaflet():
    """The map runs from the WPS image: it downloads package-lock.json's Leaflet and
    Leaflet.draw, checked against the lock file's SHA-512 integrity, into GEOML_MAP_VENDOR."""
    import base64
    import re

    dockerfile = (ROOT / "images" / "wps" / "Dockerfile").read_text()
    lock = json.loads((ROOT / "package-lock.json").read_text())["packages"]
    pins = dict(re.findall(r"^ARG (LEAFLET\w*)=(\S+)$", dockerfile, flags=re.M))
    for name, var in (("leaflet", "LEAFLET"), ("leaflet-draw", "LEAFLET_DRAW")):
        locked = lock[f"node_modules/{name}"]
        assert pins[f"{var}_VERSION"] == locked["version"], name
        algo, _, digest = locked["integrity"].partition("-")
        assert algo == "sha512" and base64.b64decode(digest).hex() == pins[f"{var}_SHA512"], name
    assert "GEOML_MAP_VENDOR=/opt/geoml-hub/node_modules" in dockerfile
    assert "COPY --from=leaflet /vendor/node_modules/ /opt/geoml-hub/node_modules/" in dockerfile
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["map"]["image"] == {"name": "", "tag": "", "pullPolicy": "IfNotPresent"}   # the WPS image


# -- the WPS Job backend -------------------------------------------------------------------------
def _wps_config(docs):
    return find(docs, "ConfigMap", "wps")[0]["data"]


def test_wps_database_url_comes_from_the_secret(rendered):
    for docs in rendered.values():
        ini = _wps_config(docs)["wps.ini"]
        assert "database = env:GEOML_WPS_DATABASE" in ini
        wps = find(docs, "Deployment", "wps")[0]["spec"]["template"]["spec"]["containers"][0]
        assert not [a for a in wps["command"] if a.startswith("--database")]
        env = [e["name"] for e in wps["env"]]
        assert env.index("GEOML_WPS_DB_PASSWORD") < env.index("GEOML_WPS_DATABASE")   # $(...) order


def test_job_backend_off_by_default(rendered):
    data = _wps_config(rendered["default"])
    assert "backend = local" in data["wps.ini"] and "job-spec.json" not in data
    assert not find(rendered["default"], "ServiceAccount", "wps-job")


def test_job_backend_renders_a_job_spec_the_wps_accepts(rendered, tmp_path, monkeypatch):
    """The rendered wps.ini and job-spec.json load into the WPS settings; the Jobs they make
    validate strictly, run like the profiles (placement) and use only what the chart creates."""
    from geoml_hub.wps.jobs import kubernetes as k8s
    from geoml_hub.wps.settings import load_settings

    docs = rendered["all-on"]
    data = _wps_config(docs)
    (tmp_path / "job-spec.json").write_text(data["job-spec.json"])
    ini = data["wps.ini"].replace("/etc/geoml-hub/job-spec.json", str(tmp_path / "job-spec.json"))
    ini = ini.replace("state_dir = /var/lib/geoml-hub/wps", f"state_dir = {tmp_path / 'state'}")
    (tmp_path / "wps.ini").write_text(ini)
    monkeypatch.setenv("GEOML_WPS_DATABASE", "postgresql://wps:secret@db:5432/wps")
    settings = load_settings(tmp_path / "wps.ini")
    assert settings.backend == "kubernetes" and settings.database.endswith("@db:5432/wps")
    # issue 12: the SSRF allow-list and the retries of killed jobs are chart values
    assert settings.url_allow == ["data.example.org", "10.1.0.0/16"] and settings.job_retries == 2
    assert settings.kubernetes_processes == ["train_model", "classify_scene", "evaluate_model"]
    # issue 14: the fan-out of large classifications and QCs over block pods
    assert (settings.fan_out_min_pixels, settings.fan_out_parallelism, settings.fan_out_block_count) == (
        100_000_000, 4, 8)
    spec = k8s.load_job_spec(settings.kubernetes_job_spec)
    assert spec.cpu_image == f"registry.example.org/geoml/geoml-hub/notebook-cpu:{__version__}"
    assert spec.cuda_image == f"registry.example.org/geoml/geoml-hub/notebook-cuda:{__version__}-cuda12.9"
    assert (spec.backoff_limit, spec.active_deadline_seconds, spec.default_device) == (1, 7200, "cuda")

    wps = find(docs, "Deployment", "wps")[0]["spec"]["template"]["spec"]
    claims = {d["metadata"]["name"] for d in find(docs, "PersistentVolumeClaim")}
    secrets = {d["metadata"]["name"] for d in find(docs, "Secret")}
    sa = find(docs, "ServiceAccount", "wps-job")[0]
    assert sa["automountServiceAccountToken"] is False
    assert spec.service_account == sa["metadata"]["name"]
    wps_mounts = {m["name"]: m["mountPath"] for m in wps["containers"][0]["volumeMounts"]}
    for m in spec.volume_mounts:   # the job pods see the WPS's files at the WPS's paths
        assert wps_mounts[m["name"]] == m["mountPath"], m
        assert m.get("readOnly") is (None if m["name"] == "outputs" else True), m
    for v in spec.volumes:
        if "persistentVolumeClaim" in v:
            assert v["persistentVolumeClaim"]["claimName"] in claims, v
    for e in spec.env_from:
        if "valueFrom" in e:
            assert e["valueFrom"]["secretKeyRef"]["name"] in secrets, e
    # the same placement as the notebook profiles
    profiles_cm = [c for c in find(docs, "ConfigMap", "hub") if "profiles.yaml" in c["data"]][0]
    from geoml_hub.hub.profiles import validate_profiles

    profiles = {p["slug"]: p for p in validate_profiles(yaml.safe_load(profiles_cm["data"]["profiles.yaml"]))}
    gpu = profiles["cuda-gpu"]["kubespawner_override"]
    assert spec.gpu_node_selector == gpu["node_selector"] and spec.gpu_tolerations == gpu["tolerations"]
    cpu = profiles["cpu"]["kubespawner_override"]
    assert spec.cpu_node_affinity == cpu["node_affinity_required"]
    for device, version in [("cpu", "1.30.0"), ("cuda", K8S_VERSIONS[-1])]:
        manifest = k8s.job_manifest(spec, "0b5c9f5e-4f4f-4e55-9a57-3d1f4c2f9a10", "train_model", device,
                                    str(settings.settings_file).replace(str(tmp_path / "state"),
                                                                        "/var/lib/geoml-hub/wps"))
        kv.validate(manifest, version, strict=True)
        pod = manifest["spec"]["template"]
        labels = pod["metadata"]["labels"]
        policy = find(docs, "NetworkPolicy", "wps-job")[0]["spec"]["podSelector"]["matchLabels"]
        assert policy.items() <= labels.items()   # the job NetworkPolicy selects the job pods
        (c,) = pod["spec"]["containers"]
        assert c["env"][-1]["name"] == "GEOML_WPS_DATABASE"
        assert ("nvidia.com/gpu" in c["resources"]["limits"]) == (device == "cuda")


@pytest.mark.parametrize("bad, message", [
    (["--set", "wps.jobs.backend=kubernetes"], "needs wps.outputs.accessModes [ReadWriteMany]"),
    (["--set", "wps.jobs.backend=kubernetes", "--set", "wps.outputs.accessModes={ReadWriteMany}",
      "--set", "postgresql.enabled=false"], "needs PostgreSQL"),
    (["--set", "wps.jobs.backend=slurm"], "backend"),
    (["--set", "wps.jobs.processes={extract_samples}"], "processes"),
])
def test_job_backend_refuses_what_cannot_work(helm_env, bad, message):
    proc = helm(helm_env, "template", "geoml", str(CHART), *bad, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_job_placement_defaults_to_placement_yaml_and_values_override_it(helm_env):
    """wps.jobs.gpu/cpu left null take geoml-hub's one placement declaration (files/placement.yaml,
    a link to src/geoml_hub/placement.yaml); values set in them still win, {} and [] mean none."""
    from geoml_hub import placement

    def job_spec(*args):
        text = helm(helm_env, "template", "geoml", str(CHART), "--set", "wps.jobs.backend=kubernetes",
                    "--set", "wps.outputs.accessModes={ReadWriteMany}", *args).stdout
        cm = [d for d in yaml.safe_load_all(text) if d and d["kind"] == "ConfigMap" and "job-spec.json" in d["data"]]
        return json.loads(cm[0]["data"]["job-spec.json"])

    spec = job_spec()
    assert spec["gpu_resource"] == placement.gpu_resource()
    assert spec["gpu_node_selector"] == placement.gpu_node_selector()
    assert spec["gpu_tolerations"] == placement.gpu_tolerations()
    assert spec["cpu_node_affinity"] == placement.cpu_node_affinity_terms()
    spec = job_spec("--set", "wps.jobs.gpu.resource=amd.com/gpu", "--set", "wps.jobs.gpu.nodeSelector.pool=gpu",
                    "--set-json", "wps.jobs.cpu.nodeAffinityTerms=[]",
                    "--set-json", 'wps.jobs.gpu.tolerations=[{"key":"x","operator":"Exists"}]')
    assert spec["gpu_resource"] == "amd.com/gpu" and spec["gpu_node_selector"] == {"pool": "gpu"}
    assert spec["gpu_tolerations"] == [{"key": "x", "operator": "Exists"}] and spec["cpu_node_affinity"] == []
    assert job_spec("--set-json", "wps.jobs.gpu.nodeSelector={}")["gpu_node_selector"] == {}


# -- KubeSpawner on the rendered hub configuration -----------------------------------------------
from hubtools import _http_error, _pod, run  # noqa: E402


@pytest.mark.parametrize("values", sorted(VALUES))
def test_kubespawner_builds_strictly_valid_pods_from_the_rendered_config(rendered, values, tmp_path, monkeypatch,
                                                                         kube_config, hub_users):
    """Real KubeSpawner (GeomlKubeSpawner), configured by the chart's rendered jupyterhub_config.py
    and profiles.yaml, builds the pod of every profile; group and registry rules hold."""
    from traitlets.config.loader import PyFileConfigLoader

    from geoml_hub.hub.spawner import GeomlKubeSpawner

    docs = rendered[values]
    data, settings = _hub_settings(docs)
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    profiles_cm = [c for c in find(docs, "ConfigMap", "hub") if "profiles.yaml" in c["data"]][0]
    (tmp_path / "profiles.yaml").write_text(profiles_cm["data"]["profiles.yaml"])
    monkeypatch.setenv("GEOML_WPS_API_TOKEN", "not-a-real-token")
    monkeypatch.setenv("GEOML_MAP_API_TOKEN", "not-a-real-map-token")
    config = PyFileConfigLoader("jupyterhub_config.py", path=str(tmp_path)).load_config()
    config.GeomlKubeSpawner.profiles_file = str(tmp_path / "profiles.yaml")
    profiles = yaml.safe_load(profiles_cm["data"]["profiles.yaml"])

    for profile in profiles:
        user = hub_users["gina"]   # in gpu-users: may use every profile
        _, pod = run(_pod(GeomlKubeSpawner, user, {"profile": profile["slug"]}, config))
        for version in K8S_VERSIONS:
            try:
                kv.validate(pod, version, strict=True)
            except kv_utils.ValidationError as exc:  # pragma: no cover - the failure message
                raise AssertionError(f"pod of profile {profile['slug']} ({version}): {exc}") from None
        spec = pod["spec"]
        (ctr,) = [c for c in spec["containers"] if c["name"] == "notebook"]
        assert ctr["image"] == profile["kubespawner_override"]["image"]
        # the server runs with geoml-hub's options: busy kernels count as activity for the culler
        # (KubeSpawner drops args without an explicit command)
        assert ctr["args"][0] == "jupyterhub-singleuser"
        assert any("geoml_hub.hub.busy_activity" in a for a in ctr["args"][1:]), ctr["args"]
        limits = ctr["resources"]["limits"]
        if profile.get("requires_gpu"):
            assert limits["nvidia.com/gpu"] == "1"
            assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        else:
            assert "nvidia.com/gpu" not in limits
            assert spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        # the chart's storage and security: memory-backed /dev/shm, the home PVC, non-root
        shm = [v for v in spec["volumes"] if v["name"] == "dshm"][0]
        assert shm["emptyDir"]["medium"] == "Memory"
        assert any("persistentVolumeClaim" in v for v in spec["volumes"])
        assert ctr["securityContext"]["runAsUser"] == settings["uid"] and settings["uid"] > 0

    gpu = [p["slug"] for p in profiles if p.get("requires_gpu")]
    assert gpu, "the chart has no GPU profile"
    status, message = _http_error(_pod(GeomlKubeSpawner, hub_users["bob"], {"profile": gpu[0]}, config))
    assert status == 403 and "gpu-users" in message
    status, message = _http_error(_pod(GeomlKubeSpawner, hub_users["bob"], {
        "profile": "cpu", "image": "unlisted-choice", "image--unlisted-choice": "docker.io/evil/miner:latest"},
        config))
    assert status == 403 and "not from an allowed registry" in message
