"""SAELens interop: cogsae reads folders written by the real sae-lens package as sae-lens
does, sae-lens reads cogsae's folders as cogsae does, and cfg values cogsae does not
implement are refused instead of read wrongly.

The sae-lens side comes from fixtures (tests/data/saelens/, made by
tests/data/make_saelens_fixtures.py with sae-lens 6.54.12); where sae-lens is installed
(``pip install cogsae[test-interop]``), the live tests load cogsae's folders with it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cogsae.errors import CogsaeError
from cogsae.sae.base import SAE, SAEConfig
from cogsae.sae.io import DEFAULT_SAE_DIR, load_sae, save_sae
from tests.helpers import REPO, randomize

FIXTURES = REPO / "tests" / "data" / "saelens"
CASES = ["standard", "topk", "topk_rescale_checkpoint", "topk_rescale_inference", "jumprelu"]


@pytest.mark.parametrize("case", CASES)
def test_cogsae_encodes_saelens_folders_as_saelens_does(case: str) -> None:
    expected = load_file(FIXTURES / f"{case}.expected.safetensors")
    sae = load_sae(FIXTURES / case)
    with torch.no_grad():
        f = sae.encode(expected["x"])
        torch.testing.assert_close(f, expected["encode"], atol=1e-5, rtol=1e-5)
        assert torch.equal(f > 0, expected["encode"] > 0)  # the same active latents
        torch.testing.assert_close(sae.decode(f), expected["decode"], atol=1e-4, rtol=1e-4)
    assert (sae.cfg.model_name, sae.cfg.layer) == ("tiny", 2)


def test_rescaled_checkpoint_needs_the_decoder_norms() -> None:
    """The checkpoint's decoder rows are not unit norm: ignoring the rescaling would pick
    other latents (the fixture is a real test of the fold)."""
    raw = load_file(FIXTURES / "topk_rescale_checkpoint" / "sae_weights.safetensors")
    norms = raw["W_dec"].norm(dim=-1)
    assert norms.min() < 0.9 and norms.max() > 1.1
    expected = load_file(FIXTURES / "topk_rescale_checkpoint.expected.safetensors")
    x = expected["x"] - raw["b_dec"]
    unscaled = (x @ raw["W_enc"] + raw["b_enc"]).topk(4, dim=-1).indices.sort().values
    scaled = expected["encode"].topk(4, dim=-1).indices.sort().values
    assert not torch.equal(unscaled, scaled)


def copy_case(tmp_path: Path, case: str, **changes: object) -> Path:
    """A copy of a fixture folder with cfg.json fields changed (None deletes a field)."""
    folder = tmp_path / case
    shutil.copytree(FIXTURES / case, folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize(
    ("case", "changes", "field"),
    [
        ("standard", {"architecture": "gated"}, "architecture"),
        ("topk", {"architecture": "batchtopk"}, "architecture"),
        ("standard", {"activation_fn_str": "tanh-relu"}, "activation_fn_str"),
        ("standard", {"normalize_activations": "layer_norm"}, "normalize_activations"),
        ("standard", {"normalize_activations": "constant_norm_rescale"}, "normalize_activations"),
        ("standard", {"normalize_activations": "expected_average_only_in"}, "norm_scaling_factor"),
        ("jumprelu", {"rescale_acts_by_decoder_norm": True}, "rescale_acts_by_decoder_norm"),
        ("standard", {"hook_head_index": 3}, "hook_head_index"),
        ("standard", {"reshape_activations": "hook_z"}, "reshape_activations"),
        ("standard", {"finetuning_scaling_factor": True}, "finetuning_scaling_factor"),
        ("standard", {"metadata": {"hook_name": "blocks.2.hook_mlp_out"}}, "hook_name"),
        ("standard", {"metadata": {"hook_name": "blocks.2.attn.hook_z"}}, "hook_name"),
    ],
)
def test_unsupported_saelens_values_are_refused(
    tmp_path: Path, case: str, changes: dict, field: str
) -> None:
    folder = copy_case(tmp_path, case, **changes)
    with pytest.raises(CogsaeError) as info:
        load_sae(folder)
    assert info.value.message.startswith("unsupported")
    assert info.value.field == field and info.value.path.endswith("cfg.json")


def scaled_sae(architecture: str, apply_b_dec_to_input: bool) -> SAE:
    """A random cogsae SAE with an input scale (as training writes it) on 16 -> 32."""
    k = 4 if architecture == "topk" else None
    cfg = SAEConfig(architecture, 16, 32, k=k, norm_scale=0.2, layer=2)  # type: ignore[arg-type]
    cfg.apply_b_dec_to_input = apply_b_dec_to_input
    return randomize(SAE(cfg), seed=5, scale=0.5)


@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu"])
@pytest.mark.parametrize("apply_b_dec_to_input", [False, True])
def test_saelens_reads_cogsae_folders_as_cogsae_does(
    tmp_path: Path, architecture: str, apply_b_dec_to_input: bool
) -> None:
    sae_lens = pytest.importorskip("sae_lens")
    sae = scaled_sae(architecture, apply_b_dec_to_input)
    save_sae(sae, tmp_path / "sae")
    theirs = sae_lens.SAE.load_from_disk(tmp_path / "sae")
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(6)) * 10
    with torch.no_grad():
        ours = sae.encode(x)
        torch.testing.assert_close(theirs.encode(x), ours, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(theirs.decode(ours), sae.decode(ours), atol=1e-3, rtol=1e-4)


def test_saelens_reads_the_default_sae_as_cogsae_does() -> None:
    """On inputs shaped like the SAE's data (its own reconstructions of random codes)."""
    sae_lens = pytest.importorskip("sae_lens")
    ours = load_sae("default")
    theirs = sae_lens.SAE.load_from_disk(DEFAULT_SAE_DIR, dtype="float32")
    gen = torch.Generator().manual_seed(7)
    codes = torch.rand(256, ours.cfg.d_sae, generator=gen) * (
        torch.rand(256, ours.cfg.d_sae, generator=gen) < 0.01
    )
    with torch.no_grad():
        x = ours.decode(codes * 4)
        f = ours.encode(x)
        torch.testing.assert_close(theirs.encode(x), f, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(theirs.decode(f), ours.decode(f), atol=1e-3, rtol=1e-4)
