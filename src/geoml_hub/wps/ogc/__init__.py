"""The OGC WPS layer on PyWPS: the service (:mod:`.service`), the process base class
(:mod:`.process`), the input and output helpers (:mod:`.wpsio`), the resolution and checks of
dataset names and URLs given as inputs (:mod:`.inputs`), the operations that run the core for a
job (:mod:`.operations`) and the process reference of ``docs/wps.md`` (:mod:`.describe`).

It knows no process of its own: the registry, :mod:`geoml_hub.processes`, sits above it.
"""
