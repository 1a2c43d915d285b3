"""Layer convention, early stopping, windows, masks and the activation cache."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cogsae.extract import Window, extract_activations, extract_layers, window_positions
from cogsae.model import LoadedModel, decoder_blocks
from cogsae.stimuli import load_stimuli
from tests.helpers import TINY_LAYER, write

TEXTS = [
    "The team won the title after an unbeaten season.",
    "Hi.",
    "The laboratory finally replicated the result after three years of careful work.",
    "She lost.",
]


def test_residual_is_hidden_states_of_layer_plus_one(tiny_model: LoadedModel) -> None:
    enc = tiny_model.tokenize(TEXTS)
    with torch.no_grad():
        full = tiny_model.model(**enc, output_hidden_states=True).hidden_states
    hooked = tiny_model.residual(**enc)
    torch.testing.assert_close(hooked, full[TINY_LAYER + 1], rtol=0, atol=0)


def test_forward_stops_after_layer(tiny_model: LoadedModel) -> None:
    calls: list[int] = []
    blocks = decoder_blocks(tiny_model.model)
    hooks_before = [len(block._forward_hooks) for block in blocks]
    handles = [
        block.register_forward_hook(lambda *_, i=i: calls.append(i))
        for i, block in enumerate(blocks)
    ]
    try:
        tiny_model.residual(**tiny_model.tokenize(TEXTS[:1]))
    finally:
        for handle in handles:
            handle.remove()
    assert calls == list(range(TINY_LAYER + 1))
    assert [len(block._forward_hooks) for block in blocks] == hooks_before


@pytest.mark.parametrize(
    ("align", "n_tokens", "span", "expected"),
    [
        ("start", 6, None, [1, 2, 3, 4]),
        ("start", 3, None, [1, 2, -1, -1]),
        ("end", 6, None, [2, 3, 4, 5]),
        ("end", 3, None, [-1, -1, 1, 2]),
        ("center", 9, None, [3, 4, 5, 6]),
        ("target", 9, (6, 7), [4, 5, 6, 7]),
        ("target", 9, (1, 2), [-1, 0 - 1, 1, 2]),
    ],
)
def test_window_positions(align: str, n_tokens: int, span, expected: list[int]) -> None:
    got = window_positions(n_tokens, Window(align, 4), span)
    np.testing.assert_array_equal(got, expected)
    assert 0 not in got  # position 0 (BOS / attention sink) never read by default


def test_window_may_include_first_position() -> None:
    got = window_positions(3, Window("start", 4, include_first=True))
    np.testing.assert_array_equal(got, [0, 1, 2, -1])


def _set(tmp_path: Path, window: str = "{align: start, size: 6}") -> Path:
    lines = ["name: toy", f"window: {window}", "factors: {c: [a, b]}", "items:"]
    for i, text in enumerate(TEXTS * 2):
        lines.append(f'  - {{text: "{text} ({i})", c: {"ab"[i % 2]}, target: "({i})"}}')
    return write(tmp_path, "\n".join(lines) + "\n")


def test_extraction_matches_single_item_forward(
    tiny_model: LoadedModel, tmp_path: Path, isolated_cache: Path
) -> None:
    stim = load_stimuli(_set(tmp_path))
    acts = extract_activations(stim, tiny_model, batch_size=3, progress=False)
    assert acts.values.shape == (8, 6, 64)
    for i, item in enumerate(stim.items):
        enc = tiny_model.tokenize([item.text])
        n = enc["input_ids"].shape[1]
        alone = tiny_model.residual(**enc)[0].numpy()
        valid = min(6, n - 1)
        assert acts.mask[i].sum() == valid
        np.testing.assert_allclose(acts.values[i, :valid], alone[1 : 1 + valid], atol=1e-5)
        assert np.all(acts.values[i, valid:] == 0)
        assert len(acts.tokens[i]) == valid


def test_target_window_centres_on_target(
    tiny_model: LoadedModel, tmp_path: Path, isolated_cache: Path
) -> None:
    stim = load_stimuli(_set(tmp_path, "{align: target, size: 3}"))
    acts = extract_activations(stim, tiny_model, progress=False)
    for item, tokens in zip(stim.items, acts.tokens, strict=True):
        window_text = tiny_model.tokenizer.convert_tokens_to_string(tokens)
        assert item.target[1] in window_text


def test_cache_is_reused_and_keyed(
    tiny_model: LoadedModel, tmp_path: Path, isolated_cache: Path, monkeypatch
) -> None:
    stim = load_stimuli(_set(tmp_path))
    first = extract_activations(stim, tiny_model, progress=False)
    assert Path(first.meta["cache"]).exists()

    def fail(*_args, **_kwargs):
        raise AssertionError("model ran although the activations were cached")

    monkeypatch.setattr(LoadedModel, "residuals", fail)
    again = extract_activations(stim, tiny_model, progress=False)
    np.testing.assert_array_equal(first.values, again.values)
    np.testing.assert_array_equal(first.mask, again.mask)
    assert again.tokens == first.tokens
    with pytest.raises(AssertionError, match="model ran"):
        extract_activations(stim, tiny_model, Window("end", 6), progress=False)


def test_layers_in_one_pass_equal_single_layer_extraction(
    tiny_model: LoadedModel, tmp_path: Path, isolated_cache: Path, monkeypatch
) -> None:
    stim = load_stimuli(_set(tmp_path))
    calls: list[int] = []
    blocks = decoder_blocks(tiny_model.model)
    handles = [
        b.register_forward_hook(lambda *_, i=i: calls.append(i)) for i, b in enumerate(blocks)
    ]
    try:
        several = extract_layers(stim, tiny_model, [2, 0], progress=False)
    finally:
        for handle in handles:
            handle.remove()
    assert list(several) == [0, 2] and max(calls) == 2  # one pass, stopped after block 2
    assert calls.count(0) == calls.count(2)
    monkeypatch.setattr(LoadedModel, "residuals", lambda *_: pytest.fail("cache missed"))
    for layer, acts in several.items():
        single = extract_activations(stim, replace(tiny_model, layer=layer), progress=False)
        np.testing.assert_array_equal(single.values, acts.values)  # bit-identical, from cache
        np.testing.assert_array_equal(single.mask, acts.mask)
        assert single.tokens == acts.tokens and single.meta == acts.meta
    monkeypatch.undo()
    for layer in several:  # recomputed alone (a pass stopping at that layer): the same bits
        fresh = replace(tiny_model, layer=layer)
        alone = extract_activations(stim, fresh, cache=False, progress=False)
        np.testing.assert_array_equal(alone.values, several[layer].values)
