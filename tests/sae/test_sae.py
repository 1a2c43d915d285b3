"""SAE architectures, the model-space decoder identity, and the folders load_sae reads."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cogsae.errors import CogsaeError
from cogsae.model import LoadedModel
from cogsae.sae.base import SAE, SAEConfig
from cogsae.sae.io import DEFAULT_SAE_DIR, load_sae, save_sae
from tests.helpers import randomize

D_IN, D_SAE = 16, 40


def random_sae(architecture: str, **fields: object) -> SAE:
    """An SAE with random weights (and non-trivial biases, scale and thresholds)."""
    cfg = SAEConfig(architecture, D_IN, D_SAE, **fields)  # type: ignore[arg-type]
    return randomize(SAE(cfg), seed=1, scale=0.3)


def inputs(n: int = 64, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(2)) * scale


ARCHS = [
    {"architecture": "standard"},
    {"architecture": "topk", "k": 5},
    {"architecture": "jumprelu", "apply_b_dec_to_input": True},
]


@pytest.mark.parametrize("fields", ARCHS, ids=lambda f: f["architecture"])
def test_encode_formula_and_model_space_decoder(fields: dict) -> None:
    sae = random_sae(norm_scale=0.25, **fields)
    x = inputs()
    scaled = x * 0.25 - (sae.b_dec if sae.cfg.apply_b_dec_to_input else 0)
    pre = scaled @ sae.W_enc + sae.b_enc
    f = sae.encode(x)
    if fields["architecture"] == "topk":
        assert ((f > 0).sum(-1) <= 5).all()
        kth = pre.topk(5, dim=-1).values[:, -1:]
        assert torch.allclose(f, torch.where(pre >= kth, pre.relu(), 0.0))
    elif fields["architecture"] == "jumprelu":
        assert torch.allclose(f, torch.where(pre > sae.threshold, pre.relu(), 0.0))
    else:
        assert torch.allclose(f, pre.relu())
    with torch.no_grad():
        expected = f @ sae.decoder_directions + sae.decoder_bias
        assert torch.allclose(sae.decode(f), expected, atol=1e-5)
        assert torch.allclose(sae(x), expected, atol=1e-5)
        assert torch.allclose(sae.decode(f), (f @ sae.W_dec + sae.b_dec) / 0.25, atol=1e-5)
    assert sae.encode(x.reshape(8, 8, D_IN)).shape == (8, 8, D_SAE)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="architecture"):
        SAEConfig("gated", D_IN, D_SAE)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k"):
        SAEConfig("topk", D_IN, D_SAE)
    assert SAEConfig("standard", D_IN, D_SAE, layer=15).hook_name == "blocks.15.hook_resid_post"


@pytest.mark.parametrize("fields", ARCHS, ids=lambda f: f["architecture"])
def test_save_load_round_trip(tmp_path: Path, fields: dict) -> None:
    """The input scale is folded into the saved weights (normalize_activations none), so
    the folder loads back unscaled and encodes and decodes the same."""
    sae = random_sae(norm_scale=0.5, model_name="tiny", layer=2, context_size=64, **fields)
    save_sae(sae, tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert loaded.cfg == replace(sae.cfg, norm_scale=1.0)
    x = inputs()
    with torch.no_grad():
        f = sae.encode(x)
        torch.testing.assert_close(loaded.encode(x), f, atol=1e-5, rtol=1e-5)
        assert torch.equal(loaded.encode(x) > 0, f > 0)
        torch.testing.assert_close(loaded(x), sae(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded.decoder_directions, sae.decoder_directions)
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["hook_name"] == "blocks.2.hook_resid_post" and cfg["hook_layer"] == 2
    assert cfg["normalize_activations"] == "none" and "norm_scaling_factor" not in cfg
    weights = load_file(tmp_path / "sae" / "sae_weights.safetensors")
    torch.testing.assert_close(weights["W_enc"], sae.W_enc.detach() * 0.5)
    torch.testing.assert_close(weights["b_dec"], sae.b_dec.detach() / 0.5)
    save_sae(sae, tmp_path / "half", dtype="float16")
    with torch.no_grad():
        assert torch.allclose(load_sae(tmp_path / "half")(x), sae(x), atol=2e-2, rtol=1e-2)


def test_legacy_cogsae_folder_keeps_its_scale(tmp_path: Path) -> None:
    """Folders written before the scale was folded (normalize_activations
    expected_average_only_in + norm_scaling_factor) still load with their scale."""
    t = saelens_tensors()
    cfg = {
        "architecture": "standard",
        "d_in": D_IN,
        "d_sae": D_SAE,
        "apply_b_dec_to_input": False,
        "normalize_activations": "expected_average_only_in",
        "norm_scaling_factor": 0.25,
    }
    sae = load_sae(saelens_folder(tmp_path / "old", cfg, t))
    assert sae.cfg.norm_scale == 0.25
    x = inputs()
    expected = (x * 0.25 @ t["W_enc"] + t["b_enc"]).relu()
    torch.testing.assert_close(sae.encode(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        sae.decode(expected), (expected @ t["W_dec"] + t["b_dec"]) / 0.25, atol=1e-4, rtol=1e-4
    )


def saelens_folder(path: Path, cfg: dict, tensors: dict[str, torch.Tensor]) -> Path:
    path.mkdir()
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, str(path / "sae_weights.safetensors")
    )
    return path


def saelens_tensors(threshold: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    tensors = {
        "W_enc": torch.randn(D_IN, D_SAE, generator=gen),
        "b_enc": torch.randn(D_SAE, generator=gen),
        "W_dec": torch.randn(D_SAE, D_IN, generator=gen),
        "b_dec": torch.randn(D_IN, generator=gen),
    }
    if threshold:
        tensors["threshold"] = torch.rand(D_SAE, generator=gen)
    return tensors


def test_saelens_standard_folder(tmp_path: Path) -> None:
    """SAELens >= 6 layout: nested metadata, b_dec subtracted from the input by default."""
    t = saelens_tensors()
    cfg = {
        "architecture": "standard",
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "normalize_activations": "none",
        "metadata": {"model_name": "gpt2", "hook_name": "blocks.3.hook_resid_post"},
    }
    sae = load_sae(saelens_folder(tmp_path / "std", cfg, t))
    x = inputs()
    expected = ((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]).relu()
    assert torch.allclose(sae.encode(x), expected, atol=1e-5)
    assert torch.allclose(sae.decode(expected), expected @ t["W_dec"] + t["b_dec"], atol=1e-4)
    assert (sae.cfg.model_name, sae.cfg.layer) == ("gpt2", 3)


@pytest.mark.parametrize("style", ["v6", "v4"])
def test_saelens_topk_folder(tmp_path: Path, style: str) -> None:
    t = saelens_tensors()
    cfg: dict = {"d_in": D_IN, "d_sae": D_SAE, "hook_name": "blocks.4.hook_resid_pre"}
    if style == "v6":
        cfg |= {"architecture": "topk", "k": 6, "apply_b_dec_to_input": False}
    else:  # SAELens 4/5: a "standard" SAE with a topk activation function
        cfg |= {
            "architecture": "standard",
            "activation_fn_str": "topk",
            "activation_fn_kwargs": {"k": 6},
            "apply_b_dec_to_input": False,
        }
    sae = load_sae(saelens_folder(tmp_path / style, cfg, t))
    pre = inputs() @ t["W_enc"] + t["b_enc"]
    top = pre.topk(6, dim=-1)
    expected = torch.zeros_like(pre).scatter_(-1, top.indices, top.values.relu())
    assert torch.allclose(sae.encode(inputs()), expected, atol=1e-5)
    assert sae.cfg.layer == 3  # resid_pre of block 4 is the output of block 3


@pytest.mark.parametrize("log", [False, True])
def test_saelens_jumprelu_folder(tmp_path: Path, log: bool) -> None:
    t = saelens_tensors(threshold=True)
    threshold = t["threshold"].clone()
    if log:  # training checkpoints store log_threshold
        t["log_threshold"] = t.pop("threshold").log()
    cfg = {"architecture": "jumprelu", "d_in": D_IN, "d_sae": D_SAE, "hook_layer": 7}
    sae = load_sae(saelens_folder(tmp_path / "jump", cfg, t))
    pre = (inputs() - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    expected = pre.relu() * (pre > threshold)
    assert torch.allclose(sae.encode(inputs()), expected, atol=1e-5)
    assert sae.cfg.layer == 7


def test_sparsify_folder(tmp_path: Path) -> None:
    """EleutherAI sparsify: cfg.json + sae.safetensors, nn.Linear encoder [d_sae, d_in]."""
    gen = torch.Generator().manual_seed(4)
    enc_w, enc_b = torch.randn(D_SAE, D_IN, generator=gen), torch.randn(D_SAE, generator=gen)
    w_dec, b_dec = torch.randn(D_SAE, D_IN, generator=gen), torch.randn(D_IN, generator=gen)
    folder = tmp_path / "layers.5"
    folder.mkdir()
    save_file(
        {"encoder.weight": enc_w, "encoder.bias": enc_b, "W_dec": w_dec, "b_dec": b_dec},
        str(folder / "sae.safetensors"),
    )
    cfg = {
        "activation": "topk",
        "expansion_factor": 32,
        "normalize_decoder": True,
        "num_latents": D_SAE,
        "k": 7,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": D_IN,
    }
    (folder / "cfg.json").write_text(json.dumps(cfg))
    sae = load_sae(folder)
    x = inputs()
    pre = torch.nn.functional.linear(x - b_dec, enc_w, enc_b).relu()
    values, indices = pre.topk(7, dim=-1)
    expected = torch.zeros_like(pre).scatter_(-1, indices, values)
    assert torch.allclose(sae.encode(x), expected, atol=1e-5)
    assert torch.allclose(sae.decode(expected), expected @ w_dec + b_dec, atol=1e-4)
    assert sae.cfg.layer == 5
    (folder / "cfg.json").write_text(json.dumps(cfg | {"activation": "groupmax"}))
    with pytest.raises(CogsaeError, match="TopK"):
        load_sae(folder)


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(CogsaeError, match=r"no cfg\.json"):
        load_sae(tmp_path / "missing")
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "cfg.json").write_text("{")
    with pytest.raises(CogsaeError, match="invalid JSON"):
        load_sae(folder)
    (folder / "cfg.json").write_text(json.dumps({"d_in": D_IN, "d_sae": D_SAE}))
    with pytest.raises(CogsaeError, match="sae_weights"):
        load_sae(folder)
    t = saelens_tensors()
    cfg = {"architecture": "gated", "d_in": D_IN, "d_sae": D_SAE}
    with pytest.raises(CogsaeError, match="gated"):
        load_sae(saelens_folder(tmp_path / "gated", cfg, t))
    cfg = {"architecture": "standard", "d_in": D_IN + 1, "d_sae": D_SAE}
    with pytest.raises(CogsaeError, match="do not match"):
        load_sae(saelens_folder(tmp_path / "shape", cfg, t))


def test_model_compatibility(tmp_path: Path, tiny_model: LoadedModel) -> None:
    wrong_width = save_sae(random_sae("standard"), tmp_path / "w")
    with pytest.raises(CogsaeError, match="d_model 64"):
        load_sae(wrong_width, tiny_model)
    cfg = SAEConfig("standard", 64, 8, model_name="other-model", layer=tiny_model.layer)
    with pytest.warns(UserWarning, match="other-model"):
        load_sae(save_sae(SAE(cfg), tmp_path / "m"), tiny_model)
    cfg = SAEConfig("standard", 64, 8, model_name="tiny-llama", layer=tiny_model.layer + 1)
    with pytest.warns(UserWarning, match="layer"):
        load_sae(save_sae(SAE(cfg), tmp_path / "l"), tiny_model)
    cfg = SAEConfig("standard", 64, 8, model_name="Org/Tiny-Llama", layer=tiny_model.layer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same model under another spelling: no warning
        load_sae(save_sae(SAE(cfg), tmp_path / "ok"), tiny_model)


@pytest.mark.skipif(not (DEFAULT_SAE_DIR / "cfg.json").is_file(), reason="no shipped SAE yet")
def test_default_sae_loads() -> None:
    sae = load_sae("default")
    assert (sae.cfg.d_in, sae.cfg.layer, sae.cfg.model_name) == (576, 15, "smollm2-135m")
    assert sae.decoder_directions.shape == (sae.cfg.d_sae, 576)
    assert sum(f.stat().st_size for f in DEFAULT_SAE_DIR.iterdir()) < 25e6
    cfg = json.loads((DEFAULT_SAE_DIR / "cfg.json").read_text())
    assert cfg["normalize_activations"] == "none" and cfg["dtype"] == "float16"
    assert sae.cfg.norm_scale == 1.0  # the input scale is folded into the weights
    for name in ("training.json", "metrics.json"):
        corpus = json.loads((DEFAULT_SAE_DIR / name).read_text())["corpus"]
        assert corpus == [{"name": "default.jsonl", "hash": corpus[0]["hash"]}]
        assert len(corpus[0]["hash"]) == 16


@pytest.mark.slow
@pytest.mark.skipif(not (DEFAULT_SAE_DIR / "cfg.json").is_file(), reason="no shipped SAE yet")
def test_default_sae_reconstructs_the_default_model(default_model: LoadedModel) -> None:
    """On held-out text, at the layer it was trained for, the shipped SAE explains most of
    the variance of typical tokens (its metrics.json has the full evaluation)."""
    from cogsae.corpus import (
        default_corpus,
        iter_documents,
        iter_token_chunks,
        residual_tokens,
        select_documents,
    )
    from cogsae.sae.data import typical_tokens

    sae = load_sae("default", default_model)
    documents = select_documents(iter_documents([default_corpus()]), "heldout")
    chunks = iter_token_chunks(documents, default_model.tokenizer, 128)
    ids = torch.stack([next(chunks) for _ in range(4)])
    x = residual_tokens(default_model, ids, torch.ones_like(ids)).float()
    x = x[typical_tokens(x, 10.0)]
    with torch.no_grad():
        f = sae.encode(x)
        fve = 1 - (x - sae.decode(f)).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert (f > 0).sum(-1).float().mean() == pytest.approx(64, abs=1)
    assert fve > 0.75
