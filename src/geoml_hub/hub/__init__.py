"""geoml-hub's JupyterHub side: notebook profiles and the spawners that apply them.

- :mod:`geoml_hub.hub.profiles` loads ``profiles.yaml`` and validates it against
  ``profiles.schema.yaml`` (the z2jh ``singleuser.profileList`` shape plus geoml-hub's
  ``allowed_groups``, ``requires_gpu`` and ``placement``),
  filters it by JupyterHub groups, checks submitted options, detects the local GPU and turns a
  profile into local spawner settings or into KubeSpawner's ``profile_list``.
- :mod:`geoml_hub.hub.services` builds the hub's services, roles and idle culler, for
  ``geoml-hub up`` (:mod:`geoml_hub.hub.config`) and the Helm chart's configuration alike.
- :mod:`geoml_hub.hub.spawner` holds ``GeomlLocalSpawner`` (``geoml-hub up``, one machine)
  and ``GeomlKubeSpawner`` (Kubernetes; kubespawner is imported only when it is asked for).

Importing this package imports neither jupyterhub, kubespawner nor torch.
"""
