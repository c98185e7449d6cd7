"""The WPS's HTTP side: the WSGI app (:mod:`.app`: the WPS endpoint, the job API, the outputs)
and ``geoml-hub wps serve`` (:mod:`.serve`: the app with its dispatcher, under gunicorn or
werkzeug)."""
