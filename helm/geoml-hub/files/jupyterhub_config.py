# geoml-hub's JupyterHub configuration on Kubernetes (rendered by the Helm chart).
# The chart's values come in values.json next to this file; secrets come from the environment
# (JPY_COOKIE_SECRET, CONFIGPROXY_AUTH_TOKEN, GEOML_WPS_API_TOKEN, GEOML_MAP_API_TOKEN).
import json
import os
from pathlib import Path

from geoml_hub.hub.config import SERVER_ARGS, SERVER_TOKEN_SCOPES
from geoml_hub.hub.services import Culler, Service, hub_services

HERE = Path(__file__).resolve().parent
V = json.loads((HERE / "values.json").read_text())

# -- hub and proxy ----------------------------------------------------------------------------
c.JupyterHub.base_url = V["baseUrl"]
c.JupyterHub.hub_bind_url = f"http://:{V['hubPort']}"
c.JupyterHub.hub_connect_url = f"http://{V['hubService']}:{V['hubPort']}"
if V["publicUrlKnown"]:  # the ingress host; otherwise redirects stay relative
    c.JupyterHub.public_url = V["publicUrl"].rstrip("/") + "/"
c.JupyterHub.db_url = "sqlite:////srv/jupyterhub/jupyterhub.sqlite"
c.JupyterHub.cleanup_servers = False          # user pods outlive a hub restart
c.ConfigurableHTTPProxy.should_start = False  # the proxy Deployment
c.ConfigurableHTTPProxy.api_url = V["proxyApi"]
c.JupyterHub.last_activity_interval = 60

# -- authentication ---------------------------------------------------------------------------
c.Authenticator.admin_users = set(V["adminUsers"])
c.JupyterHub.authenticator_class = V["authenticatorClass"]
if V["authenticatorClass"] == "geoml_hub.hub.auth.NativeAuthenticator":
    import nativeauthenticator

    c.JupyterHub.template_paths = [str(Path(nativeauthenticator.__file__).parent / "templates")]
    c.Authenticator.allow_all = True  # admin approval of sign-ups is the gate

# -- user servers: KubeSpawner with geoml-hub's profiles --------------------------------------
c.JupyterHub.spawner_class = "geoml_hub.hub.spawner.GeomlKubeSpawner"
if V["profilesFile"]:
    c.GeomlKubeSpawner.profiles_file = V["profilesFile"]
c.KubeSpawner.namespace = V["namespace"]
c.KubeSpawner.image = V["image"]
c.KubeSpawner.image_pull_policy = V["imagePullPolicy"]
c.KubeSpawner.image_pull_secrets = V["imagePullSecrets"]
c.KubeSpawner.uid = V["uid"]
c.KubeSpawner.fs_gid = V["fsGid"]
c.KubeSpawner.extra_labels = V["labels"]
c.KubeSpawner.default_url = V["defaultUrl"]
c.KubeSpawner.start_timeout = V["startTimeout"]
c.KubeSpawner.http_timeout = 60
c.KubeSpawner.allow_privilege_escalation = False
c.KubeSpawner.container_security_context = {"capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}
storage = V["storage"]
if storage["type"] == "dynamic":
    c.KubeSpawner.storage_pvc_ensure = True
    c.KubeSpawner.pvc_name_template = storage["dynamic"]["pvcNameTemplate"]
    c.KubeSpawner.storage_capacity = storage["capacity"]
    c.KubeSpawner.storage_access_modes = storage["dynamic"]["storageAccessModes"]
    if storage["dynamic"]["storageClass"]:
        c.KubeSpawner.storage_class = storage["dynamic"]["storageClass"]
# home PVC, memory-backed /dev/shm, shared data and results (read-only)
c.KubeSpawner.volumes = V["volumes"]
c.KubeSpawner.volume_mounts = V["volumeMounts"]
c.KubeSpawner.environment = dict(V["environment"])
c.Spawner.server_token_scopes = SERVER_TOKEN_SCOPES
# the images' command, named: KubeSpawner drops the args of an implicit (image) command, and
# SERVER_ARGS makes busy kernels count as activity for the idle culler
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
c.KubeSpawner.args = SERVER_ARGS

# -- services, roles and the idle culler: geoml_hub.hub.services, as geoml-hub up's -----------
cull = V["cull"]
hub = hub_services(
    wps=Service(url=V["wps"]["url"], api_token=os.environ["GEOML_WPS_API_TOKEN"]) if V["wps"]["enabled"] else None,
    map=Service(url=V["map"]["url"], api_token=os.environ["GEOML_MAP_API_TOKEN"]) if V["map"]["enabled"] else None,
    culler=Culler(timeout=int(cull["timeout"]), every=int(cull["every"]), concurrency=int(cull["concurrency"]),
                  users=cull["users"], admin_users=cull["adminUsers"], remove_named_servers=cull["removeNamedServers"],
                  max_age=int(cull["maxAge"] or 0)) if cull["enabled"] else None,
)
if hub.activity_interval is not None:
    c.JupyterHub.last_activity_interval = hub.activity_interval
    c.KubeSpawner.environment["JUPYTERHUB_ACTIVITY_INTERVAL"] = str(hub.activity_interval)
c.JupyterHub.services = hub.services
c.JupyterHub.load_roles = hub.roles

# -- hub.config: {Class: {trait: value}} ------------------------------------------------------
for cls, traits in V["config"].items():
    for trait, value in traits.items():
        setattr(c[cls], trait, value)

# -- hub.extraConfig, in name order -----------------------------------------------------------
for name in V["extraConfig"]:
    path = HERE / f"extra-{name}.py"
    exec(compile(path.read_text(), str(path), "exec"), {"c": c, "__file__": str(path)})  # noqa: S102
