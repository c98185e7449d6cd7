"""geoml-hub's JupyterHub side: notebook profiles and the spawners that apply them.

- :mod:`geoml_hub.hub.profiles` loads and validates ``profiles.yaml`` (the z2jh
  ``singleuser.profileList`` shape plus geoml-hub's ``allowed_groups`` and ``requires_gpu``),
  filters it by JupyterHub groups, checks submitted options, detects the local GPU and turns a
  profile into local spawner settings or into KubeSpawner's ``profile_list``.
- :mod:`geoml_hub.hub.spawner` holds ``GeomlLocalSpawner`` (``geoml-hub up``, one machine)
  and ``GeomlKubeSpawner`` (Kubernetes; kubespawner is imported only when it is asked for).

Importing this package imports neither jupyterhub, kubespawner nor torch.
"""
