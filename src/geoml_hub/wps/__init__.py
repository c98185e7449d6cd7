"""geoml-hub's OGC WPS server.

- :mod:`geoml_hub.wps.settings`: the server's settings (INI file) and PyWPS's configuration;
- :mod:`geoml_hub.wps.ogc`: the OGC/PyWPS layer (service, process base class, inputs and outputs);
- :mod:`geoml_hub.wps.jobs`: the job system (job table, dispatcher, worker, Kubernetes Jobs);
- :mod:`geoml_hub.wps.http`: the WSGI app and ``geoml-hub wps serve``.

The processes themselves are the registry's, :mod:`geoml_hub.processes`. The modules of the
flat layout before issue 13 (``geoml_hub.wps.service``, ``.process``, ``.tasks``, ``.datasets``,
``.jobs``, ``.dispatcher``, ``.worker``, ``.k8s``, ``.app``, ``.server``, ``.auth``,
``.headers``, ``.describe``, ``.wpsio``) still import, with a :class:`DeprecationWarning`.
"""
