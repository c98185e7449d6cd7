"""geoml_hub.hub.services: the one builder of the hub's services, roles and idle culler, used by
geoml-hub up (hub/config.py) and the Helm chart (files/jupyterhub_config.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from geoml_hub.hub.services import Culler, Service, activity_interval, hub_services

ROOT = Path(__file__).resolve().parents[1]


def test_started_services_with_the_culler():
    hub = hub_services(wps=Service("http://127.0.0.1:5000", command=["wps"], environment={"OMP_NUM_THREADS": "2"}),
                       map=Service("http://127.0.0.1:5100", command=["map"]),
                       culler=Culler(timeout=600, every=30))
    wps, web_map, culler = hub.services
    assert wps == {"name": "wps", "display": True, "info": {"description": wps["info"]["description"]},
                   "url": "http://127.0.0.1:5000", "command": ["wps"], "oauth_no_confirm": True,
                   "environment": {"OMP_NUM_THREADS": "2"}}
    assert web_map["oauth_client_allowed_scopes"] == ["access:services!service=wps"] and web_map["environment"] == {}
    assert culler == {"name": "idle-culler", "command": [sys.executable, "-m", "jupyterhub_idle_culler",
                                                         "--timeout=600", "--cull-every=30"]}
    assert [r["name"] for r in hub.roles] == ["user", "idle-culler"]
    assert hub.roles[0]["scopes"] == ["self", "access:services"]
    assert "admin:users" not in hub.roles[1]["scopes"] and hub.roles[1]["services"] == ["idle-culler"]
    assert hub.activity_interval == 150


def test_remote_services_and_every_culler_option():
    hub = hub_services(wps=Service("http://wps:5000", api_token="t1"), map=None,
                       culler=Culler(timeout=3600, every=600, concurrency=10, users=True, admin_users=False,
                                     remove_named_servers=True, max_age=7200, python="/py"))
    wps, culler = hub.services
    assert wps["api_token"] == "t1" and "command" not in wps and "environment" not in wps
    assert culler["command"] == ["/py", "-m", "jupyterhub_idle_culler", "--timeout=3600", "--cull-every=600",
                                 "--concurrency=10", "--cull-users", "--cull-admin-users=false",
                                 "--remove-named-servers", "--max-age=7200"]
    assert "admin:users" in hub.roles[1]["scopes"]
    assert hub.activity_interval == 300


def test_no_culler():
    hub = hub_services(culler=Culler(timeout=0))
    assert hub.services == [] and [r["name"] for r in hub.roles] == ["user"] and hub.activity_interval is None
    assert hub_services().activity_interval is None
    assert (activity_interval(8), activity_interval(100), activity_interval(10**6)) == (5, 25, 300)


def test_both_hub_configurations_use_it():
    for path in (ROOT / "src" / "geoml_hub" / "hub" / "config.py", ROOT / "helm" / "geoml-hub" / "files" /
                 "jupyterhub_config.py"):
        text = path.read_text()
        assert "hub_services(" in text, path
        assert "jupyterhub_idle_culler" not in text and "delete:servers" not in text, path
