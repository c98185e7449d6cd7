"""``python -m geoml_hub.processes SCHEMA``: write the process enum of the chart's
``values.schema.json`` from the registry (:func:`geoml_hub.processes.chart_schema`)."""

import argparse
import json
import sys

from pathlib import Path

from . import chart_schema, schema_text


def main(argv=None) -> int:
    """Rewrite the schema file in place; exit status 0."""
    parser = argparse.ArgumentParser(prog="python -m geoml_hub.processes", description=__doc__.splitlines()[0])
    parser.add_argument("schema", nargs="?", default="helm/geoml-hub/values.schema.json",
                        help="the chart's values.schema.json (default: %(default)s)")
    args = parser.parse_args(argv)
    with open(args.schema, encoding="utf-8") as fh:
        schema = json.load(fh)
    Path(args.schema).write_text(schema_text(chart_schema(schema)), encoding="utf-8")
    print(f"wrote {args.schema}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
