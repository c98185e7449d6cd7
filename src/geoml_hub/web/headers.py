"""Response headers that keep served files from acting as pages of the hub's origin.

The WPS and the map serve what users' jobs wrote (PyCM's ``report.html``, GeoJSON, CSV) on
the hub's origin. :data:`SECURITY_HEADERS` makes a browser show such a file sandboxed (an
opaque origin, no scripts, no forms) and never guess another content type for it.
"""

from __future__ import annotations

#: Headers of every WPS answer and of the map's ``/api/`` answers.
SECURITY_HEADERS = (("Content-Security-Policy", "sandbox"), ("X-Content-Type-Options", "nosniff"))


def with_headers(start_response, headers=SECURITY_HEADERS):
    """A WSGI ``start_response`` that sets ``headers`` on the answer, replacing any of the same name.

    Parameters
    ----------
    start_response : callable
        The server's ``start_response``.
    headers : sequence of (str, str)
        Header names and values.
    """
    names = {name.lower() for name, _ in headers}

    def start(status, response_headers, exc_info=None):
        kept = [(k, v) for k, v in response_headers if k.lower() not in names]
        return start_response(status, kept + list(headers), exc_info)

    return start
