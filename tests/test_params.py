"""One declaration per parameter: the CLI options, the WPS inputs, the pipelines' pass-through
and docs/parameters.md are generated from the dataclass fields of geoml_hub.params."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import pytest

from geoml_hub import cli, params, pipeline
from geoml_hub.tools import paramdoc
from geoml_hub.balancing import BalanceParams
from geoml_hub.errors import ParameterError
from geoml_hub.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "parameters.md"


def test_doc_is_current():
    assert DOC.read_text(encoding="utf-8") == paramdoc.document(), (
        f"docs/parameters.md is out of date with the declarations: run `{paramdoc.REGENERATE}`")


def test_every_declared_parameter_has_a_row():
    text = DOC.read_text(encoding="utf-8")
    for _, cls, _, _ in paramdoc.OPERATIONS:
        for p in params.declared(cls):
            assert f"| `{p.name}` |" in text, p.name


@dataclasses.dataclass(frozen=True)
class Toy:
    """A new operation: what a declared field gives the CLI, the WPS and the pipeline."""

    size: int = params.param(3, "integer", "Size", "How big.", minimum=1, maximum=9, unit="pixels")
    names: Optional[tuple] = params.param(None, "integers", "Names", "Which ones.", wps="which")
    fast: bool = params.param(True, "boolean", "Fast", "Go fast.", cli="--slow")
    internal: float = 0.5


def test_a_declared_field_becomes_an_option_an_input_and_a_pass_through():
    from geoml_hub.wps.ogc import wpsio

    parser = cli.argparse.ArgumentParser()
    params.add_cli_options(parser, Toy)
    assert params.cli_values(parser.parse_args([]), Toy) == {"size": 3, "names": None, "fast": True}
    assert params.cli_values(parser.parse_args(["--size", "5", "--names", "2,3", "--slow"]), Toy) == {
        "size": 5, "names": (2, 3), "fast": False}
    with pytest.raises(ParameterError, match="--names expects comma-separated integers"):
        params.cli_values(parser.parse_args(["--names", "a,b"]), Toy)
    inputs = {i.identifier: i for i in wpsio.param_inputs(Toy)}
    assert list(inputs) == ["size", "which", "fast"]
    assert inputs["size"].data == 3 and inputs["size"].min_occurs == 0 and inputs["size"].uoms[0].uom == "pixels"
    assert inputs["size"].abstract == "How big." and inputs["which"].data_type == "string"
    assert params.names(Toy) == ("size", "names", "fast")


def test_the_cli_options_are_the_declarations():
    args = cli.build_parser().parse_args(["balance", "t", "--out", "o", "--clusters", "4", "--global-clusters"])
    assert params.cli_values(args, BalanceParams) == {"threshold": None, "step": None, "target": None,
                                                     "n_clusters": 4, "per_class": False, "seed": 0}
    args = cli.build_parser().parse_args(["train", "t", "--out", "m.pt", "--bands", "2,3", "--no-augment"])
    values = params.cli_values(args, TrainConfig)
    assert values == {**params.defaults(TrainConfig), "bands": (2, 3), "augment": False}
    assert values["epochs"] == TrainConfig().epochs
    # the pipeline takes both groups; its own --seed seeds every step
    args = cli.build_parser().parse_args(["pipeline", "t", "--out", "o", "--seed", "4", "--epochs", "2",
                                          "--target", "9"])
    assert args.seed == 4 and args.epochs == 2 and args.target == 9


def test_the_pipeline_passes_on_the_declared_balancing_parameters():
    given = {"n_clusters": 3, "per_class": False, "seed": 1, "unknown": 1, "target": None}
    assert pipeline._balance_kwargs(given) == {"n_clusters": 3, "per_class": False, "seed": 1}


def test_declarations_are_checked():
    with pytest.raises(ValueError, match="range needs both"):
        params.param(1, "integer", "X", "x", minimum=1)
    with pytest.raises(ValueError, match="kind"):
        params.param(1, "number", "X", "x")
