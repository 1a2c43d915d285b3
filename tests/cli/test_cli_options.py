"""The option generator: flags, defaults and help come from the config dataclasses, and
error messages name the same flags."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cogsae.cli import main
from cogsae.errors import CogsaeError
from cogsae.flags import CorpusOptions, ModelOptions, flag
from cogsae.pipeline.config import RunConfig
from cogsae.sae.train import TrainConfig


def test_flags_come_from_field_metadata() -> None:
    assert flag(RunConfig, "n_permutations") == "--permutations"
    assert flag(RunConfig, "n_splits") == "--folds"
    assert flag(RunConfig, "window_align") == "--window"
    assert flag(RunConfig, "methods") == "methods"  # not an option: the field's name
    assert flag(TrainConfig, "n_tokens") == flag(CorpusOptions, "n_tokens") == "--tokens"
    assert flag(ModelOptions, "layer") == "--layer"


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [("n_permutations", -1, "--permutations"), ("n_repeats", 0, "--repeats"), ("k", (0,), "--k")],
)
def test_config_errors_name_real_flags(field: str, value: object, named: str) -> None:
    with pytest.raises(CogsaeError) as err:
        RunConfig("set.yaml", **{field: value})
    assert err.value.field == named


def test_train_help_shows_the_dataclass_defaults() -> None:
    result = CliRunner().invoke(main, ["train-sae", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert f"[default: {TrainConfig.k}]" in text and "--l1 FLOAT" in text
    assert "--tokens INTEGER Distinct training tokens. [default: 2000000]" in text
    assert "--epochs INTEGER Passes over the --tokens activations. [default: 1]" in text


def test_every_command_has_help_and_shared_flags_agree() -> None:
    helps = {}
    for command in main.commands:
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0, command
        helps[command] = " ".join(result.output.split())
    for command in ("run", "extract", "inspect", "clamp", "attribute", "train-sae"):
        assert "--dtype [auto|bfloat16|float32|float16]" in helps[command], command
    for command in ("inspect", "clamp", "attribute", "run"):
        assert "'none' for raw units only" in helps[command], command
    assert "--output, --out" in helps["run"] and "--out, --output" in helps["inspect"]
