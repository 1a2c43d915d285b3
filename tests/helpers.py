"""Shared test builders: stimulus files, tiny models, synthetic data and binomial bands."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from cogsae.analysis.ensemble import LinearModel
from cogsae.model import LoadedModel, load_model
from cogsae.pipeline import RunConfig
from cogsae.sae.base import SAE, SAEConfig
from cogsae.stimuli import load_stimuli

REPO = Path(__file__).resolve().parents[1]
TINY_LAYER = 1
TINY_CONTEXT = 256  # positions of the tiny Llama and its tokenizer's model_max_length
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def write(tmp_path: Path, text: str, name: str = "set.yaml") -> Path:
    """Write a stimulus YAML file for a test."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


SUBJECTS = ["The team", "My sister", "The company", "Our lab", "The band", "His class"]
OBJECTS = ["the prize", "the contract", "the final", "the grant", "the award", "the vote"]
GAIN = ["won", "secured", "earned", "claimed"]
LOSS = ["lost", "forfeited", "missed", "dropped"]


def planted_set(folder: Path) -> Path:
    """A set whose conditions differ by verb identity, read in a window on the verb: even a
    random model's activations carry that."""
    lines = [
        "name: planted",
        "concept: winning",
        "window: {align: target, size: 2}",
        "factors: {condition: [gain, loss]}",
        "items:",
    ]

    def item(text: str, condition: str, verb: str) -> str:
        return f'  - {{text: "{text}", condition: {condition}, target: "{verb}"}}'

    for condition, verbs in (("gain", GAIN), ("loss", LOSS)):
        for i in range(24):
            verb = verbs[i % 4]
            text = f"{SUBJECTS[i % 6]} {verb} {OBJECTS[(i // 6 + i) % 6]} in round {i}."
            lines.append(item(text, condition, verb))
    lines.append("test:")
    for condition, verbs in (("gain", GAIN), ("loss", LOSS)):
        for i in range(6):
            verb = verbs[i % 4]
            lines.append(
                item(f"{SUBJECTS[i]} {verb} {OBJECTS[i]} at last, in game {i}.", condition, verb)
            )
    path = folder / "planted.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


NEUTRAL = ["saw", "watched", "noted", "met"]


def three_level_set(folder: Path, per_level: int = 20) -> Path:
    """A short-form set of three levels (gain / neutral / loss verbs) read in a window on the
    verb, so even a random model's activations tell the levels apart."""
    lines = ["name: three", "concept: outcome", "window: {align: target, size: 2}"]
    lines += ["factors: {outcome: [gain, neutral, loss]}", "items:"]
    for level, verbs in (("gain", GAIN), ("neutral", NEUTRAL), ("loss", LOSS)):
        for i in range(per_level):
            verb = verbs[i % 4]
            text = f"{SUBJECTS[i % 6]} {verb} {OBJECTS[(i // 6 + i) % 6]} in week {i}."
            lines.append(f'  - {{text: "{text}", outcome: {level}, target: "{verb}"}}')
    path = folder / "three.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def planted_factorial_set(folder: Path) -> Path:
    """A 2x2 set (condition gain/loss x place home/away), each of 8 templates (groups) in
    all four cells: the condition is planted in the verb the window reads, the place comes
    after it (so a causal model's window cannot carry it). Two concepts, one per factor."""
    lines = [
        "name: planted_place",
        "concept: winning",
        "window: {align: target, size: 2}",
        "factors: {condition: [gain, loss], place: [home, away]}",
        "items:",
    ]
    for i in range(8):
        for condition, verbs in (("gain", GAIN), ("loss", LOSS)):
            for place, where in (("home", "at home"), ("away", "abroad")):
                verb = verbs[i % 4]
                text = f"{SUBJECTS[i % 6]} {verb} {OBJECTS[(i // 6 + i) % 6]} {where}, round {i}."
                lines.append(
                    f'  - {{text: "{text}", condition: {condition}, place: {place}, '
                    f'group: t{i:02d}, target: "{verb}"}}'
                )
    path = folder / "planted_place.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_config(assets: dict, output: Path, **overrides) -> RunConfig:
    options = {
        "stimuli": str(assets["stimuli"]),
        "model": assets["model"],
        "layer": 1,
        "dtype": "float32",
        "sae": assets["sae"],
        "n_repeats": 2,
        "n_permutations": 99,
        "n_bootstrap": 200,
        "n_snippets": 0,
        "causal": False,
        "output": str(output),
    }
    return RunConfig(**{**options, **overrides})


TEXTS = ["The team won the title after an unbeaten season.", "She lost the final match."]
CONSTANT = 0  # feature that fires with the same value everywhere (encoder weights zero)
DEAD = 1  # feature that never fires


def random_sae(d_in: int, d_sae: int, seed: int = 0, decoder_scale: float = 1.0) -> SAE:
    """A random ReLU SAE with input normalisation (so model and SAE space differ), plus a
    feature that is constant everywhere (encoder weights zero) and one that never fires."""
    cfg = SAEConfig(
        "standard", d_in, d_sae, apply_b_dec_to_input=True, norm_scale=0.5, layer=TINY_LAYER
    )
    sae = SAE(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in sae.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) / d_in**0.5)
        sae.W_dec.mul_(decoder_scale)
        sae.W_enc[:, [CONSTANT, DEAD]] = 0
        sae.b_enc[CONSTANT], sae.b_enc[DEAD] = 0.7, -1.0
    return sae.eval()


SNIPPET_CORPUS = """\
The old mill stood by the river for two hundred years. Children played near it every summer.
Nobody remembered who had built it; the records were lost in a fire.

The council voted to restore the mill and open it as a small museum! Volunteers painted the
walls and repaired the wheel. Would the museum attract visitors from the city?

In spring the first visitors arrived by train and by bicycle. They admired the wheel turning
slowly in the water. The mill stood by the river for two hundred years.
"""
"""A small corpus of distinct sentences (one repeated) for snippet scans."""


def snippet_corpus(folder: Path) -> Path:
    """`SNIPPET_CORPUS` written to ``folder``/corpus.txt."""
    path = folder / "corpus.txt"
    path.write_text(SNIPPET_CORPUS, encoding="utf-8")
    return path


WORDS = "the cat dog sat ran on under a mat tree house quickly slowly red blue".split()  # noqa: SIM905
"""Vocabulary of `word_corpus`."""


def word_corpus(folder: Path, n_documents: int = 400, seed: int = 0) -> Path:
    """``folder``/corpus.txt: ``n_documents`` seeded documents of 4..29 `WORDS` each, blank-line
    separated (enough tokens for several activation shards of the tiny model)."""
    rng = np.random.default_rng(seed)
    path = folder / "corpus.txt"
    documents = (" ".join(rng.choice(WORDS, int(rng.integers(4, 30)))) for _ in range(n_documents))
    path.write_text("\n\n".join(documents), encoding="utf-8")
    return path


def linear(units: list[int], coef: list[float], intercept: float = 0.0) -> LinearModel:
    """An unstandardized ensemble: decision = x[units] @ coef + intercept."""
    k = len(units)
    return LinearModel(np.array(units), np.zeros(k), np.ones(k), np.array(coef), intercept)


def binomial_band(n_tests: int, rate: float = 0.05, mass: float = 0.999) -> tuple[int, int]:
    """Central ``mass`` interval of the rejection count of ``n_tests`` tests calibrated at
    ``rate``: a calibration test passes when its count lies inside."""
    low, high = stats.binom.interval(mass, n_tests, rate)
    return int(low), int(high)


def permutation_ks_p(p: list[float], n_permutations: int, seed: int = 0) -> float:
    """KS p-value of permutation p-values against U(0, 1): p = k / (n + 1), k uniform on
    1..n+1 under the null, is made continuous uniform by subtracting U(0, 1) / (n + 1), so
    the test is exact. A calibrated test keeps this above a small threshold."""
    u = np.random.default_rng(seed).random(len(p))
    return float(stats.kstest(np.asarray(p) - u / (n_permutations + 1), "uniform").pvalue)


def ragged_profiles(
    n_items: int, n_positions: int, n_units: int, *, min_positions: int = 2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise profiles with start-aligned windows of varied length and alternating labels.

    Returns values [items, positions, units] float32 (not yet masked, so a test can plant
    effects first), mask [items, positions] (each item keeps ``min_positions``..all) and
    labels [items] (1, 0, 1, ...).
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n_items) % 2
    lengths = rng.integers(min_positions, n_positions + 1, n_items)
    mask = np.arange(n_positions)[None, :] < lengths[:, None]
    values = rng.standard_normal((n_items, n_positions, n_units)).astype(np.float32)
    return values, mask, labels


def randomize(sae: SAE, seed: int, scale: float) -> SAE:
    """Fill every parameter of ``sae`` with N(0, scale^2) draws (JumpReLU thresholds made
    positive), in eval mode: a random SAE with non-trivial biases and scale."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in sae.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * scale)
        if sae.cfg.architecture == "jumprelu":
            sae.threshold.abs_()
    return sae.eval()


TINY_VOCAB = 2048
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""SmolLM2's chat format (without its default system prompt): the model judge needs one."""
ANSWERS = ["yes", "no", "Yes", "No", "NO"]  # judge answers that must be single tokens ("YES" not)
THINGS = ["apple", "banana", "cat", "dog", "word", "river", "city", "game"]


TOKENIZER_SETS = ("capitals_paired", "city", "negation", "success", "success_tense")
"""Shipped sets whose texts train the tiny tokenizer: a fixed list, so that adding a set to
stimuli/ does not change its merges (and with them the tiny model's planted signal)."""


def tokenizer_sample() -> list[str]:
    """The fixed texts the tiny tokenizer is trained on: the `TOKENIZER_SETS` texts, the
    planted set's words and a few hundred sentences in which the answers the judges read and
    the words tests plant (" apple", " banana", " cat") are frequent enough to be one token."""
    texts = [SNIPPET_CORPUS, *TEXTS]
    for name in TOKENIZER_SETS:
        stimuli = load_stimuli(REPO / "stimuli" / f"{name}.yaml")
        texts += stimuli.texts() + stimuli.texts(test=True)
    verbs = GAIN + LOSS
    texts += [f"{s} {v} {o}." for s in SUBJECTS for v in verbs for o in OBJECTS]
    for thing in THINGS:
        for answer in ANSWERS:
            texts += [f'Is this a {thing}? "{answer}," I said: {answer}, {answer} to the {thing}.']
    return texts


def tiny_tokenizer() -> PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer (vocab `TINY_VOCAB`) trained on `tokenizer_sample`, shaped
    like SmolLM2's: no BOS added, pad = eos = <|im_end|>, right padding, untrimmed offsets,
    a chat template and a context of `TINY_CONTEXT` tokens. Training is deterministic (same
    merges every run) and takes well under a second, so fast tests need no model download."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1")
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(tokenizer_sample(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        unk_token="<|endoftext|>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        padding_side="right",
        model_max_length=TINY_CONTEXT,
        chat_template=CHAT_TEMPLATE,
    )


def dying_loader(folder: str, marker: str) -> LoadedModel:
    """The tiny model, loaded on a Ray worker; the first worker to run its second forward
    pass exits abruptly (once: ``marker`` remembers it)."""
    loaded = load_model(folder, layer=TINY_LAYER, dtype="float32")
    calls = []

    def maybe_die(*_: object) -> None:
        calls.append(1)
        if len(calls) == 2 and not os.path.exists(marker):
            Path(marker).touch()
            os._exit(1)

    loaded.model.model.register_forward_pre_hook(maybe_die)
    return loaded
