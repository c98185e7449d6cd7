"""``docs/parameters.md``: the tables of the core operations' parameters, generated from their
declarations (:mod:`geoml_hub.params`).

``python -m geoml_hub.tools.paramdoc --write docs/parameters.md`` writes it;
``tests/test_params.py`` fails when the file is out of date.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from ..balancing import BalanceParams
from ..classification import ClassifyParams
from ..compatibility import CompatibilityParams
from ..fileio import write_text
from ..params import Param, declared
from ..selection import SelectParams
from ..training import TrainConfig
from ..validation import EvaluateParams

REGENERATE = "python -m geoml_hub.tools.paramdoc --write docs/parameters.md"

#: (title, declaring dataclass, command, WPS process) of each operation, in the order of the document.
OPERATIONS = [
    ("Balancing", BalanceParams, "geoml-hub balance", "balance_samples"),
    ("Training", TrainConfig, "geoml-hub train", "train_model"),
    ("Patch-level QC", EvaluateParams, "geoml-hub evaluate", "evaluate_model"),
    ("Compatibility check", CompatibilityParams, "geoml-hub compatibility", "check_compatibility"),
    ("Classification", ClassifyParams, "geoml-hub classify", "classify_scene"),
    ("Model selection", SelectParams, "geoml-hub pipeline", None),
]


def _cell(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(text) -> str:
    return f"`{text}`" if text not in (None, "") else ""


def _cli(p: Param) -> str:
    if not p.cli:
        return ""
    if p.kind == "boolean":
        return f"`{p.cli}` (sets {str(not p.default).lower()})"
    return f"`{p.cli}`"


def table(cls) -> List[str]:
    """Markdown table rows of the declared parameters of ``cls``."""
    lines = ["| parameter | option | WPS input | type | default | allowed | unit | description |",
             "|---|---|---|---|---|---|---|---|"]
    for p in declared(cls):
        default = ("derived (see description)" if p.default is None
                   else _code(str(p.default).lower() if isinstance(p.default, bool) else p.default))
        kind = "comma-separated integers" if p.kind == "integers" else p.kind
        lines.append(f"| `{p.name}` | {_cli(p)} | {_code(p.wps)} | {kind} | {default} | {_cell(p.allowed_text())} | "
                     f"{_cell(p.unit or '')} | {_cell(p.title)}: {_cell(p.help)} |")
    return lines


def document() -> str:
    """The whole ``docs/parameters.md``."""
    lines = ["# Parameters of the core operations", "",
             "Each operation's parameters are declared once, as the fields of a dataclass in its core module",
             "(`geoml_hub.params`): the command-line options, the WPS inputs (with their DescribeProcess",
             "defaults, ranges and units), the pipelines' pass-through and these tables are generated from",
             "them. The WPS and the command line refuse a value outside the allowed range (the command line",
             "before it writes anything); the core checks what it must. `geoml-hub pipeline` takes the",
             "balancing, training (but `--model`: the model selection chooses it) and model-selection options",
             "(its `--seed` seeds the split, the balancing, the folds and the training).", "",
             "This file is generated; do not edit it by hand. Change the declarations, then run", "",
             "```sh", REGENERATE, "```", ""]
    for title, cls, command, process in OPERATIONS:
        where = f"`{command}` and the WPS process `{process}`" if process else f"`{command}` (no WPS process)"
        lines += [f"## {title}", "", f"`{cls.__module__}.{cls.__name__}`: {where}.", ""]
        lines += table(cls) + [""]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the document, or write it (atomically) with ``--write PATH``; exit status 0."""
    parser = argparse.ArgumentParser(prog="python -m geoml_hub.tools.paramdoc", description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="PATH", help="write the Markdown to PATH instead of printing it")
    args = parser.parse_args(argv)
    text = document()
    if args.write:
        write_text(args.write, text)
        print(f"wrote {args.write}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
