"""``values.schema.json`` of the Helm chart, generated from ``values.schema.yaml``.

As zero-to-jupyterhub does, the chart's schema is written in YAML with a description on every
value (``helm/geoml-hub/values.schema.yaml``) and turned into the JSON file Helm reads. One
part comes from elsewhere: the items of ``singleuser.profileList`` are the profile schema of
``src/geoml_hub/hub/profiles.schema.yaml`` (the schema ``geoml-hub up`` and the spawners
validate profiles files with), without geoml-hub's ``x-`` keys; and the enum of
``wps.jobs.processes`` comes from the process registry (:func:`geoml_hub.processes.chart_schema`).
So a profile key, and a process that may run as a Kubernetes Job, is declared
once, for the hub, the chart and ``docs/chart-values.md`` (:mod:`geoml_hub.tools.chartdoc`, which
reads the generated file).

Command line::

    python -m geoml_hub.tools.chartschema helm/geoml-hub           # write values.schema.json
    python -m geoml_hub.tools.chartschema helm/geoml-hub --check   # exit 1 if it is out of date

``tests/test_chart_values_doc.py`` fails when ``values.schema.json`` is out of date.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import yaml

from geoml_hub.processes import chart_schema

from ..fileio import write_text
from ..hub.profiles import PROFILES_SCHEMA_FILE

#: Command that regenerates ``values.schema.json`` (quoted in test failures).
REGENERATE = "python -m geoml_hub.tools.chartschema helm/geoml-hub"

#: where in the values schema the profile list is
PROFILE_LIST = ("singleuser", "profileList")


def strip_extensions(node: Any) -> Any:
    """``node`` without geoml-hub's ``x-...`` keys (messages for the hub's validator)."""
    if isinstance(node, dict):
        return {k: strip_extensions(v) for k, v in node.items() if not str(k).startswith("x-")}
    if isinstance(node, list):
        return [strip_extensions(v) for v in node]
    return node


def values_schema(chart: Path | str) -> Dict[str, Any]:
    """The chart's values schema: ``values.schema.yaml`` with the profile list's items.

    Parameters
    ----------
    chart : path-like
        The chart directory (e.g. ``helm/geoml-hub``).
    """
    schema = yaml.safe_load((Path(chart) / "values.schema.yaml").read_text(encoding="utf-8"))
    node = schema
    for key in PROFILE_LIST:
        node = node["properties"][key]
    profiles = yaml.safe_load(PROFILES_SCHEMA_FILE.read_text(encoding="utf-8"))
    node["items"] = strip_extensions(profiles["items"])
    return chart_schema(schema)  # wps.jobs.processes: the enum from the process registry


def render(chart: Path | str) -> str:
    """The text of ``values.schema.json`` (2-space indented JSON, ending with a newline)."""
    return json.dumps(values_schema(chart), indent=2, ensure_ascii=False) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: write the chart's ``values.schema.json``, or check that it is current.

    Returns
    -------
    int
        0; with ``--check`` 1 when the file differs from what would be written.
    """
    parser = argparse.ArgumentParser(prog="python -m geoml_hub.tools.chartschema",
                                     description="Generate a Helm chart's values.schema.json from its "
                                                 "values.schema.yaml and geoml-hub's profile schema.")
    parser.add_argument("chart", nargs="?", default="helm/geoml-hub", help="chart directory (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the file is out of date")
    args = parser.parse_args(argv)
    path = Path(args.chart) / "values.schema.json"
    text = render(args.chart)
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(f"{path} is out of date: run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    write_text(path, text)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
