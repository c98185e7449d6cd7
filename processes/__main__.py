"""``python -m geoml_hub.processes``: regenerate the chart's ``values.schema.json``, whose enum of
``wps.jobs.processes`` comes from the registry (same as ``python -m geoml_hub.chartschema``)."""

import sys

from geoml_hub.chartschema import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
