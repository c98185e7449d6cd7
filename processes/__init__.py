"""geoml-hub's OGC WPS processes (installed as ``geoml_hub.processes``)."""
