"""URL routing of the WPS app and the map app: werkzeug's :class:`~werkzeug.routing.Map`, set up
to match paths exactly as given (no redirects to add or merge slashes)."""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple

from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter, Map, Rule

__all__ = ["Rule", "url_map", "match"]


class RestConverter(BaseConverter):
    """``<rest:name>``: the rest of the path, possibly empty, slashes included (werkzeug's ``path``
    converter wants at least one character and no leading slash; the apps check what they get)."""

    regex = ".*"
    part_isolating = False


def url_map(rules: Iterable[Rule]) -> Map:
    """A :class:`Map` of ``rules`` with the ``rest`` converter that matches paths as they are: no
    redirect to add a slash, merge slashes or reach the canonical rule of an endpoint's defaults
    (where a path is meant with and without a trailing slash, both rules are written out)."""
    return Map(list(rules), strict_slashes=True, merge_slashes=False, redirect_defaults=False,
               converters={"rest": RestConverter})


def match(urls: Map, path: str) -> Tuple[Optional[str], Dict]:
    """``(endpoint, arguments)`` of the rule that matches ``path``, or ``(None, {})``."""
    try:
        return urls.bind("localhost", "/").match(path)
    except HTTPException:  # NotFound, or a RequestRedirect to a path with a trailing slash: no match
        return None, {}
