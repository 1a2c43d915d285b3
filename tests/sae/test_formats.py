"""Public SAE folder formats for Llamas: sparsify (EleutherAI) folders and release folders
with one SAE per hookpoint (sparsify runs, SAELens releases), read exactly as the library
reads them or refused; and `load_model(device_map=...)` for models past one device.

The sparsify side comes from fixtures (tests/data/sparsify/, made by
tests/data/make_sparsify_fixtures.py with eai-sparsify 1.3.3); where sparsify or sae-lens
is installed (``pip install cogsae[test-interop]``), the live tests compare with them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from cogsae.errors import CogsaeError
from cogsae.model import load_model
from cogsae.sae.base import SAE, SAEConfig
from cogsae.sae.io import load_sae, resolve_sae_folder, sae_files_fingerprint, save_sae
from tests.helpers import REPO, TINY_LAYER

SPARSIFY = REPO / "tests" / "data" / "sparsify"
RELEASE = SPARSIFY / "release"
SAELENS = REPO / "tests" / "data" / "saelens"


@pytest.mark.parametrize(("hookpoint", "k", "atol"), [("layers.1", 4, 1e-5), ("layers.2", 6, 3e-2)])
def test_cogsae_encodes_sparsify_folders_as_sparsify_does(
    hookpoint: str, k: int, atol: float
) -> None:
    """layers.2 is stored in bfloat16 (sparsify computed in it, cogsae in float32)."""
    expected = load_file(RELEASE / f"{hookpoint}.expected.safetensors")
    sae = load_sae(RELEASE / hookpoint)
    assert (sae.cfg.architecture, sae.cfg.k, sae.cfg.layer) == ("topk", k, int(hookpoint[-1]))
    with torch.no_grad():
        f = sae.encode(expected["x"])
        torch.testing.assert_close(f, expected["encode"], atol=atol, rtol=1e-2)
        assert torch.equal(f > 0, expected["encode"] > 0)  # the same active latents
        decoded = sae.decode(expected["encode"])
        torch.testing.assert_close(decoded, expected["decode"], atol=10 * atol, rtol=1e-2)


def test_release_folder_picks_the_layer_asked_for() -> None:
    for layer in (1, 2):
        assert resolve_sae_folder(RELEASE, layer) == RELEASE / f"layers.{layer}"
        picked, direct = load_sae(RELEASE, layer=layer), load_sae(RELEASE / f"layers.{layer}")
        assert all(
            torch.equal(a, b) for a, b in zip(picked.parameters(), direct.parameters(), strict=True)
        )
    assert sae_files_fingerprint(RELEASE, 1) == sae_files_fingerprint(RELEASE / "layers.1")
    assert sae_files_fingerprint(RELEASE, 1) != sae_files_fingerprint(RELEASE, 2)


def test_release_folder_defaults_to_the_models_layer() -> None:
    model = SimpleNamespace(layer=2, d_model=16, name="tiny", device=torch.device("cpu"))
    assert load_sae(RELEASE, model).cfg.layer == 2  # type: ignore[arg-type]


@pytest.mark.parametrize(("layer", "problem"), [(None, "several SAEs"), (5, "no SAE")])
def test_release_folder_without_one_sae_for_the_layer_lists_its_layers(
    layer: int | None, problem: str
) -> None:
    with pytest.raises(CogsaeError) as info:
        load_sae(RELEASE, layer=layer)
    assert info.value.field == "layer" and info.value.message.startswith(problem)
    assert "1: layers.1; 2: layers.2" in info.value.message
    assert "not on the residual stream: layers.2.mlp" in info.value.message


def test_explicit_layer_must_match_a_single_folder() -> None:
    with pytest.raises(CogsaeError, match="reads layer 1, not the layer 2") as info:
        load_sae(RELEASE / "layers.1", layer=2)
    assert info.value.field == "layer"


def copy_folder(source: Path, target: Path, **changes: object) -> Path:
    """A copy of an SAE folder with cfg.json fields changed (top level)."""
    shutil.copytree(source, target)
    cfg = json.loads((target / "cfg.json").read_text())
    (target / "cfg.json").write_text(json.dumps(cfg | changes))
    return target


def test_hookpoint_folder_names(tmp_path: Path) -> None:
    """Seed subfolders take their parent's hookpoint; a renamed folder has no layer."""
    run = tmp_path / "run"
    for seed in ("seed0", "seed1"):
        copy_folder(RELEASE / "layers.1", run / "layers.1" / seed)
    assert load_sae(run / "layers.1" / "seed1").cfg.layer == 1
    with pytest.raises(CogsaeError, match="several SAEs for layer 1") as info:
        load_sae(run, layer=1)
    assert "layers.1/seed0, layers.1/seed1" in info.value.message
    assert load_sae(copy_folder(RELEASE / "layers.1", tmp_path / "my_sae")).cfg.layer is None


@pytest.mark.parametrize(
    ("folder", "field"),
    [
        ("refused/transcoder/layers.2.mlp", "transcode"),
        ("refused/skip/layers.1", "skip_connection"),
        ("refused/groupmax/layers.1", "activation"),
        ("release/layers.2.mlp", "hookpoint"),
    ],
)
def test_unsupported_sparsify_folders_are_refused(folder: str, field: str) -> None:
    with pytest.raises(CogsaeError) as info:
        load_sae(SPARSIFY / folder)
    assert info.value.message.startswith("unsupported") and info.value.field == field


@pytest.mark.parametrize(
    ("name", "changes", "field"),
    [
        ("layers.1", {"signed": True}, "signed"),
        ("layers.1", {"jumprelu": True}, "jumprelu"),
        ("embed_tokens", {}, "hookpoint"),
        ("layers.3.self_attn", {}, "hookpoint"),
        ("model.layers.3.mlp", {}, "hookpoint"),
    ],
)
def test_unsupported_sparsify_values_are_refused(
    tmp_path: Path, name: str, changes: dict, field: str
) -> None:
    folder = copy_folder(RELEASE / "layers.1", tmp_path / name, **changes)
    with pytest.raises(CogsaeError) as info:
        load_sae(folder)
    assert info.value.message.startswith("unsupported") and info.value.field == field


def saelens_release(tmp_path: Path, hooks: dict[str, str]) -> Path:
    """A SAELens release folder: fixture case -> a copy whose hook_name is changed."""
    release = tmp_path / "release"
    for case, hook in hooks.items():
        copy_folder(SAELENS / case, release / case, metadata={"hook_name": hook})
    return release


def test_saelens_release_folder_uses_the_hook_names(tmp_path: Path) -> None:
    """resid_pre of block L+1 is layer L; hooks inside a block are skipped."""
    hooks = {
        "standard": "blocks.2.hook_resid_post",
        "topk": "blocks.4.hook_resid_pre",
        "jumprelu": "blocks.3.hook_mlp_out",
    }
    release = saelens_release(tmp_path, hooks)
    assert resolve_sae_folder(release, 2) == release / "standard"
    assert load_sae(release, layer=3).cfg.architecture == "topk"
    with pytest.raises(CogsaeError, match="not on the residual stream: jumprelu"):
        load_sae(release, layer=4)


def test_saelens_hooks_off_the_blocks_are_refused(tmp_path: Path) -> None:
    """resid_pre of block 0 is the embedding output, which no block hook reads."""
    for hook in ("blocks.0.hook_resid_pre", "hook_embed", "model.layers.2.mlp"):
        folder = copy_folder(SAELENS / "standard", tmp_path / hook, metadata={"hook_name": hook})
        with pytest.raises(CogsaeError, match="unsupported: hook") as info:
            load_sae(folder)
        assert info.value.field == "hook_name"
    folder = copy_folder(SAELENS / "standard", tmp_path / "hf", metadata={"hook_name": "layers.2"})
    assert load_sae(folder).cfg.layer == 2


def test_sparsify_reads_its_folders_as_cogsae_does() -> None:
    """Live: sparsify's own loader and encoder on fresh inputs, well spread out."""
    sparsify = pytest.importorskip("sparsify")
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(3)) * 10
    theirs = sparsify.SparseCoder.load_from_disk(RELEASE / "layers.1")
    ours = load_sae(RELEASE / "layers.1")
    with torch.no_grad():
        top_acts, top_indices, _ = theirs.encode(x)
        dense = torch.zeros(64, 32).scatter_(-1, top_indices, top_acts)
        torch.testing.assert_close(ours.encode(x), dense, atol=1e-4, rtol=1e-4)
        decoded = theirs.decode(top_acts, top_indices)
        torch.testing.assert_close(ours.decode(dense), decoded, atol=1e-4, rtol=1e-4)


def test_jumprelu_matches_saelens_with_thresholds_of_both_signs(tmp_path: Path) -> None:
    """SAELens: latent i is active iff pre_i > threshold_i, its value ReLU(pre_i) (the
    pre-activation itself when the threshold is >= 0)."""
    sae = SAE(SAEConfig("jumprelu", 16, 32, apply_b_dec_to_input=True, layer=2))
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for param in sae.parameters():
            param.copy_(torch.randn(param.shape, generator=gen))
    x = torch.randn(64, 16, generator=gen)
    with torch.no_grad():
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        f = sae.encode(x)
    assert torch.equal(f, torch.where(pre > sae.threshold, pre.relu(), 0.0))
    sae_lens = pytest.importorskip("sae_lens")
    theirs = sae_lens.SAE.load_from_disk(save_sae(sae, tmp_path / "sae"))
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), f, atol=1e-5, rtol=1e-5)


def test_load_model_passes_a_device_map(tiny_assets: dict) -> None:
    mapped = load_model(tiny_assets["model"], layer=TINY_LAYER, dtype="float32", device_map="cpu")
    plain = load_model(tiny_assets["model"], layer=TINY_LAYER, dtype="float32")
    assert mapped.device == torch.device("cpu")
    batch = plain.tokenize(["The team won the title."])
    with torch.no_grad():
        torch.testing.assert_close(mapped.model(**batch).logits, plain.model(**batch).logits)
