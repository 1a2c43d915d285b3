"""Shared fixtures: a tiny random Llama with a tokenizer trained in-process for fast tests (no
model download) and the real default model for the few tests about it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import settings
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from cogsae.model import DEFAULT_MODEL, LoadedModel, default_model_dir, load_model, load_tokenizer
from cogsae.sae.base import SAE, SAEConfig
from cogsae.sae.io import save_sae
from tests.helpers import REPO, TINY_CONTEXT, TINY_LAYER, planted_set, tiny_tokenizer

# Property tests (tests/test_properties.py): a few examples in CI, many with
# `--hypothesis-profile=long` for local exploration.
settings.register_profile("ci", max_examples=4, deadline=None, derandomize=True)
settings.register_profile("long", max_examples=300, deadline=None)
settings.load_profile("ci")


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The converted default model folder (converts the GGUF once per machine)."""
    return default_model_dir()


@pytest.fixture(scope="session")
def tokenizer(default_model_path: Path):
    """The default model's tokenizer (vocab 49152, no BOS token added): only for tests about
    it (the shipped sets' token counts); the others use `tiny_tokenizer`."""
    return load_tokenizer(str(default_model_path))


@pytest.fixture(scope="session", name="tiny_tokenizer")
def tiny_tokenizer_fixture() -> PreTrainedTokenizerBase:
    """A byte-level BPE (vocab 2048) trained in-process, shaped like the default model's."""
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer: PreTrainedTokenizerBase) -> LoadedModel:
    """A randomly initialised 4-block Llama (d_model 64) reading layer 1, in float32."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=TINY_CONTEXT,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    return LoadedModel(model=model, tokenizer=tiny_tokenizer, name="tiny-llama", layer=TINY_LAYER)


@pytest.fixture(scope="session")
def default_model(default_model_path: Path) -> LoadedModel:
    """The real SmolLM2-135M-Instruct at layer 15, bf16 (slow tests only)."""
    loaded = load_model(str(default_model_path), dtype="bfloat16")
    loaded.name = DEFAULT_MODEL
    return loaded


@pytest.fixture()
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point cogsae's cache at a fresh, empty folder."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("COGSAE_CACHE", str(cache))
    return cache


@pytest.fixture()
def default_model_cache(isolated_cache: Path, default_model_path: Path) -> Path:
    """`isolated_cache` sharing the converted default model, for tests that load it by name
    (the session fixture converts it in the real cache first: higher scopes set up first)."""
    (isolated_cache / "models").symlink_to(default_model_path.parent)
    return isolated_cache


@pytest.fixture(scope="session")
def tiny_assets(tiny_model: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny model and a random SAE for it, saved as folders a RunConfig can name."""
    folder = tmp_path_factory.mktemp("tiny")
    tiny_model.model.save_pretrained(folder / "model")
    tiny_model.tokenizer.save_pretrained(folder / "model")
    torch.manual_seed(1)
    cfg = SAEConfig("standard", d_in=64, d_sae=128, model_name="model", layer=tiny_model.layer)
    sae = SAE(cfg)
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.3)
        sae.W_dec.copy_(sae.W_enc.T)
    save_sae(sae, folder / "sae")
    return {
        "model": str(folder / "model"),
        "sae": str(folder / "sae"),
        "stimuli": planted_set(folder),
    }


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A local 2-CPU Ray cluster whose workers import this checkout (one per session:
    every test module on Ray shares it)."""
    ray = pytest.importorskip("ray")
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 2**20,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield
    ray.shutdown()
