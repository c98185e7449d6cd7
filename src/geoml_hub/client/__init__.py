"""A Python client for geoml-hub's WPS processes, in the spirit of birdhouse's *birdy*.

Every process of the server becomes a method with keyword arguments::

    from geoml_hub.client import Client

    hub = Client()                       # GEOML_WPS_URL, JUPYTERHUB_API_TOKEN
    bal = hub.balance_samples(samples="data/eurosat_ms", step=2)
    fit = hub.train_model(samples=bal.dataset("manifest"), epochs=10)
    qc = hub.evaluate_model(model=fit.dataset("model"), samples="data/eurosat_ms")
    qc.overall_accuracy, qc.kappa        # floats
    qc.summary["ppv"]                    # the JSON summary as a dict
    qc.heatmap                           # pathlib.Path of the downloaded PNG
    qc.pycm                              # pycm.ConfusionMatrix (when the server offers it)

A call submits an asynchronous WPS 1.0.0 Execute (``storeExecuteResponse`` and
``status``), follows the status document with a progress bar and returns a
:class:`Result`. With ``wait=False`` it returns a :class:`Job` at once.

The protocol documents are built and parsed with OWSLib; every HTTP request (capabilities,
process descriptions, Execute, status documents, downloads, the job API) goes through one
:class:`requests.Session` that carries the ``Authorization: token ...`` header, retries
idempotent requests on transient failures (urllib3's ``Retry`` on its adapter) and applies
the timeout.

The package, shaped like birdy's ``birdy.client``:

- :mod:`~geoml_hub.client.base`: :class:`Client` (service discovery, capabilities,
  descriptions, Execute);
- :mod:`~geoml_hub.client.session`: the HTTP session, its retry policy, XML documents and
  downloads;
- :mod:`~geoml_hub.client.converters`: XML helpers, Python values to and from WPS literals,
  process inputs;
- :mod:`~geoml_hub.client.methods`: a method per process (signature and docstring);
- :mod:`~geoml_hub.client.outputs`: :class:`Result`;
- :mod:`~geoml_hub.client.jobs`: :class:`Job`, :class:`JobStatus` and the JSON job API;
- :mod:`~geoml_hub.client.display`: the progress bar or callback;
- :mod:`~geoml_hub.client.errors`: :class:`WPSError` and its subclasses.

Notes
-----
Why not birdy's ``WPSClient`` (birdhouse-birdy 0.10.0, which installs here from PyPI)? Tried
against ``geoml-hub wps serve``: it lists the processes, builds methods with
signatures and docstrings, runs them asynchronously with ``progress=True`` and passes an
``Authorization`` header. What it lacks for these notebooks: its requests go through
OWSLib's ``openURL``, a bare ``requests.request`` per call, so there is no session to mount a
retry policy or keep cookies on, and a status document caught mid-write ends the job with a
parse error; status URLs the server advertises under its public address are used as they
are; a refused request raises OWSLib's ``ServiceException`` holding the raw XML, not the
message, code and locator; values are not checked before the request (``epochs=2.5`` goes to
the server); parameters are positional-or-keyword and every process is described in the
constructor; results are namedtuples of URLs (or, with ``asobj``, IPython objects) without
chaining by dataset name, downloads into a chosen directory, PyCM matrices or the job API
(list, look up, cancel); its ``repr`` of literal outputs logs tracebacks. It would add
boltons, wrapt and pyOpenSSL. OWSLib itself (already a dependency) builds the Execute
request and parses capabilities, descriptions and ExecuteResponses here; what it does not
read (allowed ranges, units, ExceptionReport codes) is read in
:mod:`~geoml_hub.client.converters`.
"""

from .base import ENV_TOKEN, ENV_URL, LOGGER, Client  # noqa: F401  (LOGGER: a public name of the old module)
from .errors import WPSError, WPSJobError, WPSTimeoutError
from .jobs import Job, JobStatus
from .methods import CONTROL_OPTIONS  # noqa: F401  (a public name of the old module)
from .outputs import Result

__all__ = ["Client", "Job", "JobStatus", "Result", "WPSError", "WPSJobError", "WPSTimeoutError", "ENV_URL",
           "ENV_TOKEN"]
