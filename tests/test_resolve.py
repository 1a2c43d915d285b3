"""`cogsae.resolve`: one priority order for model and layer, and an SAE of another layer
is an error."""

from __future__ import annotations

import pytest

from cogsae import resolve
from cogsae.errors import CogsaeError
from cogsae.model import DEFAULT_MODEL
from cogsae.sae.base import SAEConfig
from tests.helpers import REPO

SAE = SAEConfig("standard", d_in=64, d_sae=128, model_name="sae-model", layer=3)
NO_LAYER = SAEConfig("standard", d_in=64, d_sae=128)


def test_model_priority() -> None:
    assert resolve.model_name("opt", {"name": "set"}, SAE) == "opt"
    assert resolve.model_name(None, {"name": "set"}, SAE) == "set"
    assert resolve.model_name(None, {}, SAE) == "sae-model"
    assert resolve.model_name(None, {}, NO_LAYER) == resolve.model_name(None, {}) == DEFAULT_MODEL


def test_layer_priority() -> None:
    assert resolve.layer(5, {"layer": 4}, NO_LAYER) == 5
    assert resolve.layer(None, {"layer": 4}, NO_LAYER) == 4
    assert resolve.layer(None, {}, SAE) == 3
    assert resolve.layer(3, {"layer": 3}, SAE) == 3
    assert resolve.layer(None, {}, None) is None  # the model's middle block


@pytest.mark.parametrize(
    ("option", "suggested", "source"), [(5, {}, "--layer"), (None, {"layer": 4}, "set")]
)
def test_an_sae_of_another_layer_is_an_error(
    option: int | None, suggested: dict, source: str
) -> None:
    with pytest.raises(CogsaeError, match=f"trained on layer 3.*{source}") as err:
        resolve.layer(option, suggested, SAE)
    assert err.value.field == "--layer"


def test_default_sae_config_is_read_without_weights() -> None:
    cfg = resolve.sae_config("default")
    assert (cfg.model_name, cfg.layer, cfg.d_sae) == (DEFAULT_MODEL, 15, 8192)
    assert resolve.sae_config("none") is None


def test_a_release_folder_gives_the_sae_of_the_requested_layer() -> None:
    release = REPO / "tests" / "data" / "sparsify" / "release"
    for requested in (1, 2):
        assert resolve.sae_config(str(release), requested).layer == requested
        layer = resolve.requested_layer(None, {"layer": requested})
        cfg = resolve.sae_config(str(release), layer)
        assert resolve.layer(None, {"layer": requested}, cfg) == requested
    with pytest.raises(CogsaeError, match="no SAE for layer 7") as err:
        resolve.sae_config(str(release), 7)
    assert err.value.field == "layer"


def test_device_map_reaches_the_model(tiny_assets: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """--device-map (a model larger than one device) is passed to from_pretrained."""
    from transformers import AutoModelForCausalLM

    from cogsae.flags import ModelOptions

    original = AutoModelForCausalLM.from_pretrained
    maps = []

    def spy(*args: object, **kwargs: object) -> object:
        maps.append(kwargs.get("device_map"))
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    options = ModelOptions(tiny_assets["model"], 1, "float32", "cpu", device_map="auto")
    loaded, sae = resolve.load(options, tiny_assets["sae"])
    assert maps == ["auto"]
    assert sae is not None and loaded.device.type == "cpu"
    assert next(sae.parameters()).device == loaded.device
