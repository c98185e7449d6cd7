"""Markdown reference of the Helm chart's values, generated from the chart itself.

``helm/geoml-hub/values.schema.json`` types and describes every value and
``helm/geoml-hub/values.yaml`` holds the defaults; :func:`values_reference` joins the two
into one table per top-level key (``## hub``, ``## proxy``, ...), with a row per value::

    | `hub.image.tag` | string | `""` | Image tag of the hub; empty: the chart's appVersion. |

Objects whose schema lists their ``properties`` are expanded into one row per key (after a
row for the object itself); free-form objects and lists (``resources``, ``nodeSelector``,
``profileList``) are one row with their default.

Command line::

    python -m geoml_hub.tools.chartdoc helm/geoml-hub                                # print it
    python -m geoml_hub.tools.chartdoc helm/geoml-hub --write docs/chart-values.md   # write it

``docs/chart-values.md`` is this output; ``tests/test_chart_values_doc.py`` fails when it is
out of date.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import yaml

from ..fileio import write_text

#: Command that regenerates ``docs/chart-values.md`` (quoted in its header and in test failures).
REGENERATE = "python -m geoml_hub.tools.chartdoc helm/geoml-hub --write docs/chart-values.md"

#: Defaults longer than this (as compact JSON) are summarised, e.g. "list of 2 profiles".
MAX_DEFAULT_CHARS = 100

#: Title of the section holding the top-level values that are not objects.
TOP_LEVEL_TITLE = "Top-level values"

#: Row header of every table.
TABLE_HEADER = ("| Key | Type | Default | Description |\n"
                "| --- | --- | --- | --- |")

#: Nouns for summarised lists whose key does not name their items in plural.
_ITEM_NOUNS = {"profileList": "profile"}

_MISSING = object()


# -- cells ------------------------------------------------------------------------------------
def escape_cell(text: str) -> str:
    """Make ``text`` safe as one cell of a Markdown (GFM) table.

    Parameters
    ----------
    text : str
        Cell text; may contain ``|``, line breaks and Markdown code spans.

    Returns
    -------
    str
        The text on one line, with ``|`` escaped everywhere (GFM splits cells before it
        parses code spans) and, outside code spans, ``\\``, ``*`` and ``<``
        backslash-escaped so that ``<release>`` is not taken for an HTML tag.
    """
    text = " ".join(str(text).split())
    parts = re.split(r"(`+[^`]*?`+)", text)
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:  # outside a code span
            part = re.sub(r"([\\*<])", r"\\\1", part)
        out.append(part.replace("|", r"\|"))
    return "".join(out)


def code_span(text: str) -> str:
    """``text`` as a Markdown code span, fenced with enough backticks.

    Parameters
    ----------
    text : str
        Literal text (one line).

    Returns
    -------
    str
        The code span, its ``|`` escaped for a table cell.
    """
    runs = [len(r) for r in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}".replace("|", r"\|")


def type_text(node: Mapping[str, Any]) -> str:
    """The type column of a schema node.

    Parameters
    ----------
    node : mapping
        A JSON-schema node (``type``, and optionally ``items``, ``enum``, ``minimum`` and
        ``maximum``).

    Returns
    -------
    str
        E.g. ``string``, ``integer or null``, ``array of string``, ``integer, 0 to 1``,
        ``string, one of: Always, IfNotPresent, Never``; empty when the node has no type.
    """
    types = node.get("type")
    if isinstance(types, str):
        types = [types]
    text = " or ".join(types or [])
    if types == ["array"] and isinstance(node.get("items"), Mapping):
        items = type_text({k: v for k, v in node["items"].items() if k in ("type", "enum")})
        if items:
            text = f"array of {items}"
    lo, hi = node.get("minimum"), node.get("maximum")
    if lo is not None and hi is not None:
        text += f", {lo} to {hi}"
    elif lo is not None:
        text += f", >= {lo}"
    elif hi is not None:
        text += f", <= {hi}"
    if node.get("enum"):
        text += ", one of: " + ", ".join(json.dumps(e) if not isinstance(e, str) else e for e in node["enum"])
    return text


def _plural(key: str, count: int) -> str:
    noun = _ITEM_NOUNS.get(key)
    if noun is None:
        last = re.findall(r"[A-Z]?[a-z0-9]+", key)
        last_word = last[-1].lower() if last else ""
        noun = last_word[:-1] if last_word.endswith("s") and len(last_word) > 1 else "item"
    return noun if count == 1 else noun + "s"


def default_text(key: str, value: Any) -> str:
    """The default column: ``value`` as compact JSON, or a summary when it is long.

    Parameters
    ----------
    key : str
        The value's own key (last part of its path), used to name the items of a long list
        (``profileList`` -> ``list of 2 profiles``, ``tolerations`` -> ``list of 1 toleration``).
    value : any
        The default from ``values.yaml``.

    Returns
    -------
    str
        A code span with one-line JSON (``""``, ``[]``, ``{"cpu": "2"}``, ``null``), or for a
        default longer than :data:`MAX_DEFAULT_CHARS` characters "list of N things (see
        values.yaml)" / "object with N keys (see values.yaml)"; ``-`` when the value is absent
        from ``values.yaml``.
    """
    if value is _MISSING:
        return "-"
    text = json.dumps(value, ensure_ascii=False)
    if len(text) <= MAX_DEFAULT_CHARS:
        return code_span(text)
    if isinstance(value, list):
        return f"list of {len(value)} {_plural(key, len(value))} (see values.yaml)"
    if isinstance(value, dict):
        return f"object with {len(value)} key{'' if len(value) == 1 else 's'} (see values.yaml)"
    return code_span(text[:MAX_DEFAULT_CHARS - 3] + "...")


# -- walking ----------------------------------------------------------------------------------
def _keys(node: Mapping[str, Any], value: Any) -> List[str]:
    """Keys of an object: those of ``values.yaml`` in its order, then schema-only ones."""
    keys = list(value) if isinstance(value, Mapping) else []
    return keys + [k for k in node.get("properties", {}) if k not in keys]


def _child(value: Any, key: str) -> Any:
    return value.get(key, _MISSING) if isinstance(value, Mapping) else _MISSING


def iter_rows(node: Mapping[str, Any], value: Any, path: str) -> Iterator[Tuple[str, Mapping[str, Any], Any]]:
    """Yield ``(dotted path, schema node, default)`` for a value and, for an object whose
    schema lists ``properties``, for every value below it (depth first, values.yaml order).

    Parameters
    ----------
    node : mapping
        Schema node of the value (``{}`` for a key the schema does not know).
    value : any
        Its default from ``values.yaml`` (:data:`_MISSING` when it has none).
    path : str
        Dotted path of the value, e.g. ``hub.db.pvc``.
    """
    yield path, node, value
    if "properties" in node:
        for key in _keys(node, value):
            yield from iter_rows(node["properties"].get(key, {}), _child(value, key), f"{path}.{key}")


def _row(path: str, node: Mapping[str, Any], value: Any) -> str:
    if "properties" in node:
        default = "(keys below)"
    else:
        default = default_text(path.rsplit(".", 1)[-1], value)
    cells = [code_span(path), escape_cell(type_text(node)), default, escape_cell(node.get("description", ""))]
    return "| " + " | ".join(cells) + " |"


def _anchor(title: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def _sections(schema: Mapping[str, Any], values: Mapping[str, Any]) -> List[Tuple[str, str, List[str]]]:
    """``(title, intro, rows)`` of every section: the top-level non-objects first, then one
    section per top-level object in values.yaml order."""
    props = schema.get("properties", {})
    top: List[str] = []
    sections: List[Tuple[str, str, List[str]]] = []
    for key in _keys(schema, values):
        node = props.get(key, {})
        value = _child(values, key)
        if "properties" in node:
            rows = [_row(p, n, v) for p, n, v in iter_rows(node, value, key)][1:]
            sections.append((key, node.get("description", ""), rows))
        else:
            top.append(_row(key, node, value))
    if top:
        sections.insert(0, (TOP_LEVEL_TITLE, "Values at the top level of values.yaml.", top))
    return sections


# -- documents --------------------------------------------------------------------------------
def values_reference(schema: Mapping[str, Any], values: Mapping[str, Any]) -> str:
    """Markdown reference of every value of a Helm chart.

    Parameters
    ----------
    schema : mapping
        The chart's ``values.schema.json`` (JSON schema of the values: ``type``,
        ``description`` and, for objects documented key by key, ``properties``).
    values : mapping
        The chart's ``values.yaml`` (the defaults).

    Returns
    -------
    str
        One ``## <key>`` section per top-level object (``## hub``, ``## proxy``, ...),
        preceded by a ``## Top-level values`` section for top-level values that are not
        objects; each section is the object's schema description and a table
        ``| Key | Type | Default | Description |`` with a row per value, keyed by its dotted
        path. Keys follow values.yaml's order (schema-only keys last, with default ``-``).
        Ends with a newline.
    """
    out: List[str] = []
    for title, intro, rows in _sections(schema, values):
        out.append(f"## {title}\n")
        if intro:
            out.append(escape_cell(intro) + "\n")
        out.append(TABLE_HEADER)
        out.extend(rows)
        out.append("")
    return "\n".join(out)


def load_chart(chart: Path | str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Read a chart's ``values.schema.json`` and ``values.yaml``.

    Parameters
    ----------
    chart : path-like
        The chart directory (e.g. ``helm/geoml-hub``).

    Returns
    -------
    schema, values : dict
        The parsed schema and default values (``{}`` for an empty values.yaml).
    """
    chart = Path(chart)
    schema = json.loads((chart / "values.schema.json").read_text(encoding="utf-8"))
    values = yaml.safe_load((chart / "values.yaml").read_text(encoding="utf-8")) or {}
    return schema, values


def document(chart: Path | str) -> str:
    """The whole ``docs/chart-values.md``: a header, a list of sections and the reference.

    Parameters
    ----------
    chart : path-like
        The chart directory (e.g. ``helm/geoml-hub``).

    Returns
    -------
    str
        Markdown text; it depends only on the chart's values and schema, not on the path
        it was read from.
    """
    schema, values = load_chart(chart)
    titles = [title for title, _, _ in _sections(schema, values)]
    contents = " · ".join(f"[{t}](#{_anchor(t)})" for t in titles)
    header = f"""# Helm chart values reference

Every value of the `helm/geoml-hub` chart: its dotted key, its type (from
`values.schema.json`), its default (from `values.yaml`) and what it does (the schema's
description). Long defaults, such as the notebook profiles, are summarised: see
`values.yaml` for them. How to install and operate the chart is in [admin.md](admin.md).

This file is generated; do not edit it by hand. Change `values.yaml` and
`values.schema.json`, then run

```sh
{REGENERATE}
```

`tests/test_chart_values_doc.py` fails when this file is out of date, when a value of
`values.yaml` has no row here, or when a description is a placeholder.

The schema is enforced: `helm lint`, `helm template`, `helm install` and `helm upgrade`
validate the merged values against `values.schema.json` and refuse a wrong type, a value
outside its enum or pattern, and an unknown key (`additionalProperties: false`).

Sections: {contents}

"""
    return header + values_reference(schema, values)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: print the reference of a chart, or write it (atomically) to a file.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``): ``CHART [--write PATH]``.

    Returns
    -------
    int
        Exit status, 0.
    """
    parser = argparse.ArgumentParser(prog="python -m geoml_hub.tools.chartdoc",
                                     description="Markdown reference of a Helm chart's values "
                                                 "(values.yaml defaults, values.schema.json types and descriptions).")
    parser.add_argument("chart", nargs="?", default="helm/geoml-hub", help="chart directory (default: %(default)s)")
    parser.add_argument("--write", metavar="PATH", help="write the Markdown to PATH instead of printing it")
    args = parser.parse_args(argv)
    text = document(args.chart)
    if args.write:
        write_text(args.write, text)
        print(f"wrote {args.write}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
