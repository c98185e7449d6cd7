"""docs/chart-values.md, the reference of the Helm chart's values, is generated from
helm/geoml-hub (values.yaml and values.schema.json) by geoml_hub.tools.chartdoc and kept current;
every value has a row, and no schema description is a placeholder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from geoml_hub.tools import chartdoc, chartschema

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "geoml-hub"
DOC = ROOT / "docs" / "chart-values.md"


@pytest.fixture(scope="module")
def chart():
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    return schema, values


def rows(text):
    """Dotted keys of the table rows of a generated document."""
    return [m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", text, flags=re.M)]


def value_paths(node, value, path=""):
    """(dotted path, is_object_with_properties) of every value of values.yaml; objects whose
    schema lists properties are walked into, the others (free-form maps, lists, scalars) are
    leaves."""
    for key, sub in value.items():
        child = node.get("properties", {}).get(key, {})
        dotted = f"{path}.{key}" if path else key
        expand = "properties" in child and isinstance(sub, dict)
        yield dotted, expand
        if expand:
            yield from value_paths(child, sub, dotted)


def schema_descriptions(node, path="values"):
    """(path, description) of every schema node that has one, items and maps included."""
    if not isinstance(node, dict):
        return
    if "description" in node:
        yield path, node["description"]
    for key, sub in node.get("properties", {}).items():
        yield from schema_descriptions(sub, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from schema_descriptions(node[key], f"{path}[{key}]")


def test_doc_is_current():
    assert DOC.exists(), f"docs/chart-values.md is missing: run `{chartdoc.REGENERATE}`"
    expected = chartdoc.document(CHART)
    assert DOC.read_text(encoding="utf-8") == expected, (
        f"docs/chart-values.md is out of date with helm/geoml-hub: run `{chartdoc.REGENERATE}`")


def test_every_value_has_a_row(chart):
    schema, values = chart
    documented = rows(DOC.read_text(encoding="utf-8"))
    assert len(documented) == len(set(documented)), "a key has two rows"
    paths = list(value_paths(schema, values))
    top_sections = {p for p, expand in paths if expand and "." not in p}
    missing = [p for p, _ in paths if p not in top_sections and p not in documented]
    assert not missing, f"values without a row in docs/chart-values.md: {missing}"
    for section in top_sections:
        assert re.search(rf"^## {re.escape(section)}$", DOC.read_text(encoding="utf-8"), flags=re.M), section


def test_rows_have_type_default_and_description(chart):
    schema, values = chart
    text = chartdoc.values_reference(schema, values)
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = re.split(r"(?<!\\)\|", line)[1:-1]
            assert len(cells) == 4, line
            assert all(c.strip() for c in cells), line


def test_no_placeholder_descriptions(chart):
    schema, _ = chart
    found = list(schema_descriptions(schema))
    assert len(found) > 100
    bad = [(p, d) for p, d in found if "(see values.yaml)" in d or len(d.strip()) < 15]
    assert not bad, f"placeholder or too short schema descriptions: {bad}"


def test_long_defaults_are_summarised_and_cells_escaped():
    schema = {"type": "object", "properties": {
        "a": {"type": "object", "description": "Section a with a pipe | in it.", "properties": {
            "profileList": {"type": "array", "description": "Profiles, see <release>."},
            "pattern": {"type": "string", "description": "A regex `a|b` here."},
            "n": {"type": ["integer", "null"], "minimum": 0, "maximum": 5, "description": "A number."},
        }},
        "top": {"type": "string", "enum": ["x", "y"], "description": "A top-level value."},
    }}
    values = {"top": "x", "a": {"profileList": [{"slug": "p" * 60}, {"slug": "q" * 60}],
                                "pattern": "a|b", "n": None}}
    text = chartdoc.values_reference(schema, values)
    assert text.index("## Top-level values") < text.index("## a")
    assert "| `top` | string, one of: x, y | `\"x\"` | A top-level value. |" in text
    assert "| `a.profileList` | array | list of 2 profiles (see values.yaml) | Profiles, see \\<release>. |" in text
    assert "| `a.pattern` | string | `\"a\\|b\"` | A regex `a\\|b` here. |" in text
    assert "| `a.n` | integer or null, 0 to 5 | `null` | A number. |" in text
    assert "Section a with a pipe \\| in it." in text


def test_command_line_writes_the_document(tmp_path, capsys):
    out = tmp_path / "chart-values.md"
    assert chartdoc.main([str(CHART), "--write", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == chartdoc.document(CHART)
    assert chartdoc.main([str(CHART)]) == 0
    assert capsys.readouterr().out == chartdoc.document(CHART)


def test_values_schema_json_is_generated_from_the_yaml_source():
    """values.schema.json = values.schema.yaml + the profile schema of the hub (one declaration
    of a profile's keys for geoml-hub up, the spawners and the chart)."""
    text = (CHART / "values.schema.json").read_text(encoding="utf-8")
    assert text == chartschema.render(CHART), f"helm/geoml-hub/values.schema.json is out of date: run " \
                                               f"`{chartschema.REGENERATE}`"
    assert chartschema.main([str(CHART), "--check"]) == 0
    from geoml_hub.hub.profiles import profiles_schema

    items = json.loads(text)["properties"]["singleuser"]["properties"]["profileList"]["items"]
    assert items == chartschema.strip_extensions(profiles_schema()["items"])
    assert "x-error" not in text


def test_schema_check_fails_on_a_stale_file(tmp_path, capsys):
    chart = tmp_path / "chart"
    chart.mkdir()
    (chart / "values.schema.yaml").write_text((CHART / "values.schema.yaml").read_text())
    (chart / "values.schema.json").write_text("{}\n")
    assert chartschema.main([str(chart), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert chartschema.main([str(chart)]) == 0
    assert chartschema.main([str(chart), "--check"]) == 0
