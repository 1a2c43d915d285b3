"""Interventions reach the model at the extraction point, do exactly what they say, and clean up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_LAYER, write
from torch import nn

from cogsae.interventions import (
    Clamp,
    Setting,
    Steer,
    ablate,
    ablation_attribution,
    generate,
    intervene,
    mean_logprobs,
    measure_effect,
    write_effects,
)
from cogsae.model import LoadedModel, decoder_blocks, residual_hook
from cogsae.stimuli import load_stimuli

TEXTS = ["The team won the title after an unbeaten season.", "She lost the final match."]
CONSTANT = 0  # feature that fires with the same value everywhere (encoder weights zero)
DEAD = 1  # feature that never fires


class TinySAE(nn.Module):
    """ReLU SAE double: f = relu((x - b_dec) @ W_enc + b_enc), decode(f) = f @ W_dec + b_dec."""

    def __init__(self, d_in: int, d_sae: int, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.W_enc = nn.Parameter(torch.randn(d_in, d_sae, generator=gen) / d_in**0.5)
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.randn(d_sae, d_in, generator=gen) / d_in**0.5)
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        with torch.no_grad():
            self.W_enc[:, CONSTANT] = 0
            self.b_enc[CONSTANT] = 0.7
            self.W_enc[:, DEAD] = 0
            self.b_enc[DEAD] = -1.0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec

    @property
    def decoder_directions(self) -> torch.Tensor:
        return self.W_dec


@pytest.fixture(scope="module")
def sae(tiny_model: LoadedModel) -> TinySAE:
    return TinySAE(tiny_model.d_model, 32)


def edited_hidden(loaded: LoadedModel, edits: list, enc: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Block-L output after the edits (as a later hook sees it) and hidden_states[L+1]."""
    seen: list[torch.Tensor] = []
    with (
        torch.no_grad(),
        intervene(loaded, edits),
        residual_hook(loaded, lambda h: seen.append(h.clone())),
    ):
        states = loaded.model(**enc, output_hidden_states=True).hidden_states
    return seen[0], states[TINY_LAYER + 1]


def test_clamp_to_own_value_leaves_logits_identical(tiny_model: LoadedModel, sae: TinySAE) -> None:
    enc = tiny_model.tokenize(TEXTS)
    with torch.no_grad():
        clean = tiny_model.model(**enc).logits
        for edit in (Clamp(sae, (CONSTANT,), (0.7,)), ablate(sae, [DEAD])):
            with intervene(tiny_model, [edit], include_first=True):
                torch.testing.assert_close(tiny_model.model(**enc).logits, clean, rtol=0, atol=0)


def test_clamp_moves_residual_by_c_minus_f_times_decoder(
    tiny_model: LoadedModel, sae: TinySAE
) -> None:
    enc = tiny_model.tokenize(TEXTS)
    clean = tiny_model.residual(**enc)  # the extraction point
    feature, value = 5, 3.0
    edited, state = edited_hidden(tiny_model, [Clamp(sae, (feature,), (value,))], enc)
    with torch.no_grad():
        f = sae.encode(clean)[..., feature]  # [batch, seq]
    expected = clean + (value - f)[..., None] * sae.W_dec[feature]
    expected[:, 0] = clean[:, 0]  # position 0 is left alone by default
    torch.testing.assert_close(edited, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, edited, rtol=0, atol=0)  # the model reads the edit
    assert (edited[:, 1:] - clean[:, 1:]).abs().max() > 0.1


def test_steer_adds_unit_direction_times_coef(tiny_model: LoadedModel) -> None:
    enc = tiny_model.tokenize(TEXTS)
    clean = tiny_model.residual(**enc)
    direction = torch.randn(tiny_model.d_model)
    edited, _ = edited_hidden(tiny_model, [Steer(direction, 2.5)], enc)
    step = edited - clean
    torch.testing.assert_close(step[:, 0], torch.zeros_like(step[:, 0]), rtol=0, atol=0)
    expected = (2.5 * direction / direction.norm()).expand_as(step[:, 1:])
    torch.testing.assert_close(step[:, 1:], expected, rtol=1e-5, atol=1e-5)


def test_hooks_removed_after_use_and_on_error(tiny_model: LoadedModel, sae: TinySAE) -> None:
    block = decoder_blocks(tiny_model.model)[TINY_LAYER]
    before = len(block._forward_hooks)
    enc = tiny_model.tokenize(TEXTS)

    class Broken:
        def delta(self, hidden: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    with intervene(tiny_model, [ablate(sae, [3])]):
        assert len(block._forward_hooks) == before + 1
    assert len(block._forward_hooks) == before
    with pytest.raises(RuntimeError, match="boom"), intervene(tiny_model, [Broken()]):
        tiny_model.model(**enc)
    assert len(block._forward_hooks) == before


def test_generation_with_kv_cache_matches_full_recompute(
    tiny_model: LoadedModel, sae: TinySAE
) -> None:
    prompt, n_new = "The team won the title", 8
    strong = [Clamp(sae, (5,), (40.0,))]
    plain = generate(tiny_model, prompt, max_new_tokens=n_new)
    clamped = generate(tiny_model, prompt, strong, max_new_tokens=n_new)
    assert clamped != plain
    # Without a cache every step re-runs the whole sequence from position 0.
    enc = tiny_model.tokenize([prompt])
    with torch.no_grad(), intervene(tiny_model, strong):
        out = tiny_model.model.generate(
            **enc, max_new_tokens=n_new, do_sample=False, use_cache=False
        )
    recomputed = tiny_model.tokenizer.decode(out[0, enc["input_ids"].shape[1] :])
    assert clamped == recomputed


def test_measure_effect_is_zero_without_edit_and_bootstrapped(
    tiny_model: LoadedModel, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "conditions:\n"
        "  win: [A team won the cup., She passed the exam., We won again., He got the job.]\n"
        "  loss: [A team lost the cup., She failed the exam., We lost again., He lost it.]\n",
    )
    stimuli = load_stimuli(path)
    steer = Steer(torch.randn(tiny_model.d_model), 20.0)
    settings = [Setting("0", 0.0, ()), Setting("20", 20.0, (steer,))]
    none, strong = measure_effect(tiny_model, stimuli, settings, n_boot=200, progress=False)
    assert none.effect == 0 and none.ci_low == 0 and none.ci_high == 0
    assert strong.ci_low <= strong.effect <= strong.ci_high
    assert strong.target_delta != 0 and strong.ci_high > strong.ci_low
    direct = mean_logprobs(tiny_model, stimuli.texts(), [steer]) - mean_logprobs(
        tiny_model, stimuli.texts()
    )
    labels = stimuli.labels()
    assert strong.effect == pytest.approx(direct[labels == 1].mean() - direct[labels == 0].mean())
    write_effects([none, strong], tmp_path / "e.csv", tmp_path / "e.png", "test")
    rows = (tmp_path / "e.csv").read_text().splitlines()
    assert rows[0].startswith("label,strength,effect,ci_low,ci_high") and len(rows) == 3
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"


def test_mean_logprobs_independent_of_batching(tiny_model: LoadedModel) -> None:
    texts = [*TEXTS, "Hi there.", "An entirely different and somewhat longer sentence here."]
    together = mean_logprobs(tiny_model, texts, batch_size=8)
    alone = np.array([mean_logprobs(tiny_model, [t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, rtol=1e-5)


def test_ablation_matches_gradient_attribution_for_small_features(
    tiny_model: LoadedModel,
) -> None:
    small = TinySAE(tiny_model.d_model, 16, seed=1)
    with torch.no_grad():
        small.W_dec.mul_(0.05)  # small edits: the first-order estimate should be close
    enc = tiny_model.tokenize(TEXTS)
    features = [DEAD, *range(2, 12)]
    result = ablation_attribution(
        tiny_model, small, features, [(enc["input_ids"], enc["attention_mask"])], progress=False
    )
    assert result.ablation[0] == 0 and result.attribution[0] == 0  # never active
    np.testing.assert_allclose(result.ablation, -result.attribution, atol=2e-3, rtol=0.2)
    assert result.pearson > 0.9
    assert result.n_tokens == int(enc["attention_mask"][:, 1:].sum())
