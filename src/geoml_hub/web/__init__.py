"""What the WPS, the web map and the hub share, owned by none of them.

- :mod:`geoml_hub.web.auth`: who a request comes from (JupyterHub's OAuth, an API token, or the
  standalone mode without a hub);
- :mod:`geoml_hub.web.headers`: the security headers of served files;
- :mod:`geoml_hub.web.serving`: running a WSGI app with gunicorn or werkzeug (:func:`run_wsgi`);
- :mod:`geoml_hub.web.proctree`: process trees and process identity (pid and start time) with
  psutil.

This package imports nothing of :mod:`geoml_hub.wps`, :mod:`geoml_hub.map` or
:mod:`geoml_hub.hub` (``tests/test_architecture.py`` checks it).
"""
