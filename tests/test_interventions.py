"""Interventions reach the model at the extraction point, do exactly what they say, and clean up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cogsae.cli import main
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
from cogsae.sae.base import SAE
from cogsae.sae.io import save_sae
from cogsae.stimuli import load_stimuli
from tests.helpers import CONSTANT, DEAD, TEXTS, TINY_LAYER, random_sae, write


@pytest.fixture(scope="session")
def saved_tiny(
    tiny_model: LoadedModel, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """(model folder, SAE folder): the tiny model and a random SAE for its layer, on disk."""
    root = tmp_path_factory.mktemp("saved")
    tiny_model.model.save_pretrained(root / "tiny-llama")
    tiny_model.tokenizer.save_pretrained(root / "tiny-llama")
    return root / "tiny-llama", save_sae(random_sae(tiny_model.d_model, 32), root / "sae")


@pytest.fixture(scope="module")
def sae(tiny_model: LoadedModel) -> SAE:
    return random_sae(tiny_model.d_model, 32)


def edited_hidden(loaded: LoadedModel, edits: list, enc: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Block-L output after the edits (as a later hook sees it) and the input block L+1 reads.

    The input of block L+1 is what "the model reads"; ``hidden_states[L+1]`` is not used
    because transformers' own capture hooks, once installed by an earlier
    ``output_hidden_states`` call, run before ours and record the unedited output.
    """
    seen: list[torch.Tensor] = []
    read: list[torch.Tensor] = []
    next_block = decoder_blocks(loaded.model)[TINY_LAYER + 1]
    handle = next_block.register_forward_pre_hook(lambda _m, args: read.append(args[0].clone()))
    try:
        with (
            torch.no_grad(),
            intervene(loaded, edits),
            residual_hook(loaded, lambda h: seen.append(h.clone())),
        ):
            loaded.model(**enc)
    finally:
        handle.remove()
    return seen[0], read[0]


def test_clamp_to_own_value_leaves_logits_identical(tiny_model: LoadedModel, sae: SAE) -> None:
    enc = tiny_model.tokenize(TEXTS)
    with torch.no_grad():
        clean = tiny_model.model(**enc).logits
        for edit in (Clamp(sae, (CONSTANT,), (0.7,)), ablate(sae, [DEAD])):
            with intervene(tiny_model, [edit], include_first=True):
                torch.testing.assert_close(tiny_model.model(**enc).logits, clean, rtol=0, atol=0)


def test_clamp_moves_residual_by_c_minus_f_times_decoder(tiny_model: LoadedModel, sae: SAE) -> None:
    enc = tiny_model.tokenize(TEXTS)
    clean = tiny_model.residual(**enc)  # the extraction point
    feature, value = 5, 3.0
    edited, state = edited_hidden(tiny_model, [Clamp(sae, (feature,), (value,))], enc)
    with torch.no_grad():
        f = sae.encode(clean)[..., feature]  # [batch, seq]
    expected = clean + (value - f)[..., None] * sae.decoder_directions[feature]
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


def test_hooks_removed_after_use_and_on_error(tiny_model: LoadedModel, sae: SAE) -> None:
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


def test_generation_with_kv_cache_matches_full_recompute(tiny_model: LoadedModel, sae: SAE) -> None:
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


STIMULI = (
    "conditions:\n"
    "  win: [A team won the cup., She passed the exam., We won again., He got the job.]\n"
    "  loss: [A team lost the cup., She failed the exam., We lost again., He lost it.]\n"
)


def test_measure_effect_is_zero_without_edit_and_bootstrapped(
    tiny_model: LoadedModel, tmp_path: Path
) -> None:
    stimuli = load_stimuli(write(tmp_path, STIMULI))
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
    # small decoder directions: the first-order estimate should be close
    small = random_sae(tiny_model.d_model, 16, seed=1, decoder_scale=0.05)
    enc = tiny_model.tokenize(TEXTS)
    features = [DEAD, *range(2, 12)]
    result = ablation_attribution(
        tiny_model, small, features, [(enc["input_ids"], enc["attention_mask"])], progress=False
    )
    assert result.ablation[0] == 0 and result.attribution[0] == 0  # never active
    np.testing.assert_allclose(result.ablation, -result.attribution, atol=2e-3, rtol=0.2)
    assert result.pearson > 0.9
    assert result.n_tokens == int(enc["attention_mask"][:, 1:].sum())


def test_cli_commands_end_to_end(
    saved_tiny: tuple[Path, Path], tmp_path: Path, isolated_cache: Path
) -> None:
    """inspect, clamp (generation and --measure) and attribute on the saved tiny model."""
    model_dir, sae_dir = saved_tiny
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The cat sat on the mat. " * 20, encoding="utf-8")
    common = ["--model", str(model_dir), "--sae", str(sae_dir), "--dtype", "float32"]
    common += ["--corpus", str(corpus), "--tokens", "60"]
    run = CliRunner().invoke
    page = tmp_path / "page"
    inspect = run(main, ["inspect", *common, "--feature", "4", "--out", str(page)])
    assert inspect.exit_code == 0, inspect.output
    assert "SAE feature 4" in inspect.output and f"layer {TINY_LAYER}" in inspect.output
    assert "promotes:" in inspect.output and (page / "index.html").is_file()
    both = run(main, ["inspect", *common, "--feature", "4", "--unit", "2"])
    assert both.exit_code == 2 and "exactly one of" in both.output

    gen = ["clamp", *common, "--max-new-tokens", "6", "--prompt", "The team"]
    clamped = run(main, [*gen, "--feature", "5=40"])
    assert clamped.exit_code == 0, clamped.output
    without, with_ = clamped.stdout.splitlines()[1:3]  # stderr has the dtype line
    assert with_.startswith("  with feature 5=40: ")
    assert without.split(": ", 1)[1] != with_.split(": ", 1)[1]
    steered = run(main, [*gen, "--steer", "unit:3=0.5x"])
    assert steered.exit_code == 0, steered.output

    out = tmp_path / "effects"
    measure = ["clamp", *common, "--measure", str(write(tmp_path, STIMULI)), "--out", str(out)]
    swept = run(main, [*measure, "--boot", "50", "--feature", "5", "--strengths", "0,10x"])
    assert swept.exit_code == 0, swept.output
    assert len((out / "effects.csv").read_text().splitlines()) == 3
    assert (out / "effects.png").is_file() and "10x" in swept.output
    valued = run(main, [*measure, "--feature", "5=3"])
    assert valued.exit_code == 2 and "--measure sweeps one intervention" in valued.output

    three = ["--feature", "2", "--feature", "3", "--feature", "4"]
    table = tmp_path / "attribution.csv"
    attribute = run(main, ["attribute", *common, *three, "--out", str(table)])
    assert attribute.exit_code == 0, attribute.output
    assert "correlation: Pearson" in attribute.output and table.is_file()


def test_batched_rows_steer_like_single_generations(tiny_model: LoadedModel) -> None:
    from cogsae.interventions import SteerRows, generate_rows

    prompt = "The team won"
    vector = torch.randn(tiny_model.d_model, generator=torch.Generator().manual_seed(0))
    vectors = torch.stack([torch.zeros_like(vector), 3 * vector])
    rows = generate_rows(tiny_model, prompt, [SteerRows(vectors)], 2, max_new_tokens=6)
    assert rows[0] == generate(tiny_model, prompt, max_new_tokens=6)
    steered = Steer(vector, float(3 * vector.norm()))
    assert rows[1] == generate(tiny_model, prompt, [steered], max_new_tokens=6)
    assert rows[0] != rows[1]
