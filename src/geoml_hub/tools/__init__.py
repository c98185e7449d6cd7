"""geoml-hub's generators of checked-in files: the tools layer beside :mod:`geoml_hub.cli`.

* :mod:`~geoml_hub.tools.chartschema` writes ``helm/geoml-hub/values.schema.json`` from
  ``values.schema.yaml``, the profile schema and the process registry;
* :mod:`~geoml_hub.tools.chartdoc` writes ``docs/chart-values.md`` from the chart;
* :mod:`~geoml_hub.tools.paramdoc` writes ``docs/parameters.md`` from the parameter declarations.

They read every layer (the registry, the hub's profile schema, the core's parameters), so they
sit above all of them, and nothing but the tests imports them (``tests/test_architecture.py``).
"""
