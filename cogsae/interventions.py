"""Causal tests at layer L: clamp, ablate or steer the residual stream and measure the effect.

Every edit goes through `cogsae.model.residual_hook`, the same point extraction reads
(the output of decoder block L), so what is intervened on is what was measured.

Edits:
- `Clamp` sets SAE features to values c_i while keeping the rest of the residual:
  ``x' = x + sum_i (c_i - f_i(x)) d_i``. The other features' contributions and the SAE's
  reconstruction error are untouched, so clamping a feature to its own value is a no-op
  (and an imperfect SAE cannot leak its error into the result). ``c_i = 0`` ablates.
- `Steer` adds ``coef * direction / ||direction||`` (a feature's decoder vector or a
  run's ensemble direction): ``coef`` is the L2 norm of the added vector.

Position 0 is left untouched by default: it carries the huge-norm attention-sink
activation (docs/methods.md, "Windows and masks"), is excluded from extraction and SAE
training, and so is outside what any selected unit describes. ``include_first=True``
edits it too.

During generation with a KV cache, each forward call after the first sees only the new
positions; `intervene(..., incremental=True)` counts positions across calls so that
"position 0" means the first token of the prompt, not the first token of each call.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from scipy import stats
from tqdm.auto import tqdm

from cogsae import streams
from cogsae._io import atomic_path, write_text
from cogsae.analysis.resampling import bootstrap_indices
from cogsae.analysis.transfer import percentile_ci
from cogsae.corpus import corpus_chunks, corpus_files, length_sorted_batches, token_batches
from cogsae.errors import CogsaeError
from cogsae.model import LoadedModel, residual_hook
from cogsae.stimuli import StimulusSet

if TYPE_CHECKING:
    from cogsae.sae.base import SAE


class Edit(Protocol):
    """A change of the layer-L residual stream."""

    def delta(self, hidden: torch.Tensor) -> torch.Tensor:
        """What to add to ``hidden`` [batch, seq, d_model]: float32, broadcastable to it."""
        ...


@dataclass(frozen=True)
class Clamp:
    """Set SAE features to fixed activations, keeping the rest of the residual stream.

    Attributes:
        sae: the SAE whose features are clamped (model-space ``encode`` and
            ``decoder_directions`` [d_sae, d_model]).
        features: indices i of the clamped features.
        values: target activation c_i of each feature (0 ablates it).
    """

    sae: SAE
    features: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.features) != len(self.values):
            raise ValueError("one value per clamped feature")
        n_features = self.sae.decoder_directions.shape[0]
        bad = [i for i in self.features if not 0 <= i < n_features]
        if bad:
            raise CogsaeError(f"features {bad} out of range 0..{n_features - 1}", field="feature")

    def delta(self, hidden: torch.Tensor) -> torch.Tensor:
        """``sum_i (c_i - f_i(x)) d_i``, [batch, seq, d_model] float32."""
        directions = self.sae.decoder_directions[list(self.features)].detach().float()
        acts = self.sae.encode(hidden.to(directions.dtype))[..., list(self.features)].float()
        target = torch.tensor(self.values, dtype=torch.float32, device=hidden.device)
        return (target - acts) @ directions


def ablate(sae: SAE, features: Sequence[int]) -> Clamp:
    """Clamp ``features`` to 0: remove their contribution, keep everything else."""
    return Clamp(sae, tuple(features), (0.0,) * len(features))


@dataclass(frozen=True)
class Steer:
    """Add a fixed vector along a direction at every edited position.

    Attributes:
        direction: [d_model] steering direction in model space (normalized here).
        coef: L2 norm of the added vector; negative subtracts the direction.
    """

    direction: torch.Tensor
    coef: float

    def delta(self, hidden: torch.Tensor) -> torch.Tensor:
        """``coef * direction / ||direction||``, [d_model] float32 (broadcast over positions)."""
        direction = self.direction.to(hidden.device, torch.float32)
        return self.coef * direction / direction.norm()


@contextmanager
def intervene(
    loaded: LoadedModel,
    edits: Sequence[Edit],
    *,
    include_first: bool = False,
    incremental: bool = False,
) -> Iterator[None]:
    """Apply ``edits`` (their deltas summed, each computed on the unedited residual) at layer L.

    Args:
        loaded: the model; its ``layer`` is edited.
        edits: the edits; none leaves the model untouched (no hook registered).
        include_first: also edit position 0 (see module doc).
        incremental: successive forward calls continue one sequence (generation with a
            KV cache, one context per generation); otherwise each call starts at position 0.
    """
    if not edits:
        yield
        return
    seen = 0

    def edit(hidden: torch.Tensor) -> torch.Tensor:
        nonlocal seen
        start = seen if incremental else 0
        seen += hidden.shape[1]
        delta = sum(e.delta(hidden) for e in edits)
        position = torch.arange(start, start + hidden.shape[1], device=hidden.device)
        keep = (position >= (0 if include_first else 1)).float()[:, None]  # [seq, 1]
        return (hidden.float() + delta * keep).to(hidden.dtype)

    with residual_hook(loaded, edit):
        yield


@dataclass(frozen=True)
class SteerRows:
    """Add its own vector to each row of a batch (one prompt steered several ways at once).

    Attributes:
        vectors: [rows, d_model] the added vectors (not normalized).
    """

    vectors: torch.Tensor

    def delta(self, hidden: torch.Tensor) -> torch.Tensor:
        """[rows, 1, d_model] float32 (broadcast over positions)."""
        return self.vectors.to(hidden.device, torch.float32)[:, None, :]


def generate(
    loaded: LoadedModel,
    prompt: str,
    edits: Sequence[Edit] = (),
    *,
    max_new_tokens: int = 40,
    sample: bool = False,
    seed: int = 0,
    include_first: bool = False,
) -> str:
    """Continuation of ``prompt`` with ``edits`` active at every step (greedy by default).

    The seed is set right before generating, so runs with and without edits draw the
    same random numbers when ``sample`` is on.
    """
    return generate_rows(
        loaded,
        prompt,
        edits,
        1,
        max_new_tokens=max_new_tokens,
        sample=sample,
        seed=seed,
        include_first=include_first,
    )[0]


@torch.inference_mode()
def generate_rows(
    loaded: LoadedModel,
    prompt: str,
    edits: Sequence[Edit],
    rows: int,
    *,
    max_new_tokens: int = 40,
    sample: bool = False,
    seed: int = 0,
    include_first: bool = False,
) -> list[str]:
    """``rows`` continuations of one ``prompt`` generated as one batch (no padding, so each
    row is what `generate` alone gives); a `SteerRows` edit steers each row its own way."""
    enc = {k: v.expand(rows, -1) for k, v in loaded.tokenize([prompt]).items()}
    torch.manual_seed(seed)
    with intervene(loaded, edits, include_first=include_first, incremental=True):
        out = loaded.model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            use_cache=True,
            pad_token_id=loaded.tokenizer.pad_token_id,
        )
    new = out[:, enc["input_ids"].shape[1] :]
    return [loaded.tokenizer.decode(row, skip_special_tokens=True) for row in new]


@torch.inference_mode()
def mean_logprobs(
    loaded: LoadedModel,
    texts: Sequence[str],
    edits: Sequence[Edit] = (),
    *,
    batch_size: int = 16,
    include_first: bool = False,
) -> np.ndarray:
    """[texts] mean log-probability (nats) of each text's tokens 1..n-1 given their prefix.

    Texts are run in batches of similar length (right-padded; padding is masked out).
    """
    ids = [torch.tensor(x) for x in loaded.tokenizer(list(texts))["input_ids"]]
    if min(len(x) for x in ids) < 2:
        raise CogsaeError("every text needs at least 2 tokens to score", field="texts")
    out = np.empty(len(texts))
    batches = length_sorted_batches(ids, batch_size, loaded.tokenizer.pad_token_id)
    for members, input_ids, mask in batches:
        input_ids, mask = input_ids.to(loaded.device), mask.to(loaded.device)
        with intervene(loaded, edits, include_first=include_first):
            logits = loaded.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        token_logp = logp.gather(-1, input_ids[:, 1:, None])[..., 0]
        real = mask[:, 1:].float()
        out[members] = ((token_logp * real).sum(1) / real.sum(1)).cpu()
    return out


@dataclass(frozen=True)
class Setting:
    """One point of an intervention sweep.

    Attributes:
        label: how the strength was written (e.g. "2x", "-4").
        strength: its numeric value (x-axis of the plot).
        edits: the edits applied at this strength.
    """

    label: str
    strength: float
    edits: tuple[Edit, ...]


@dataclass(frozen=True)
class Effect:
    """Effect of one intervention setting on target- versus reference-condition texts.

    With d_i = (mean per-token log-prob of item i with the intervention) - (without it):

    Attributes:
        label: the setting's label.
        strength: the setting's numeric strength.
        effect: mean d over target items - mean d over reference items (nats/token); > 0
            means the intervention makes target-condition texts relatively more likely.
        ci_low: lower bound of the bootstrap CI of ``effect`` (see `measure_effect`).
        ci_high: upper bound of that CI.
        target_delta: mean d over target items.
        reference_delta: mean d over reference items.
    """

    label: str
    strength: float
    effect: float
    ci_low: float
    ci_high: float
    target_delta: float
    reference_delta: float


def measure_effect(
    loaded: LoadedModel,
    stimuli: StimulusSet,
    settings: Sequence[Setting],
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    batch_size: int = 16,
    include_first: bool = False,
    progress: bool = True,
) -> list[Effect]:
    """Difference-of-differences effect of each setting on the set's target vs reference items.

    Items of other levels (label -1) are ignored. The CI is a percentile bootstrap over
    items (`cogsae.analysis.resampling.bootstrap_indices`: stratified by condition, item groups such
    as minimal pairs resampled whole); every setting uses the same resamples.
    """
    labels = stimuli.labels()
    used = labels >= 0
    texts = [t for t, keep in zip(stimuli.texts(), used, strict=True) if keep]
    labels = labels[used]
    groups = stimuli.groups()
    groups = None if groups is None else groups[used]
    rng = streams.rng(seed, streams.Stream.INTERVENTION_BOOTSTRAP)
    samples = [bootstrap_indices(labels, rng, groups) for _ in range(n_boot)]
    kw = {"batch_size": batch_size, "include_first": include_first}
    base = mean_logprobs(loaded, texts, **kw)
    effects = []
    for setting in tqdm(settings, desc="sweep", disable=not progress):
        delta = mean_logprobs(loaded, texts, setting.edits, **kw) - base
        tgt, ref = delta[labels == 1], delta[labels == 0]
        boot = [
            delta[idx][labels[idx] == 1].mean() - delta[idx][labels[idx] == 0].mean()
            for idx in samples
        ]
        low, high = percentile_ci(np.asarray(boot), ci)
        effects.append(
            Effect(
                setting.label,
                setting.strength,
                float(tgt.mean() - ref.mean()),
                float(low),
                float(high),
                float(tgt.mean()),
                float(ref.mean()),
            )
        )
    return effects


def write_effects(effects: Sequence[Effect], csv_path: Path, png_path: Path, title: str) -> None:
    """The sweep as a CSV table and a PNG plot (effect with CI bars, per-condition deltas)."""
    from matplotlib.figure import Figure

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(list(Effect.__dataclass_fields__))
    for e in effects:
        writer.writerow([e.label, *(f"{v:.6g}" for v in astuple(e)[1:])])
    write_text(csv_path, buf.getvalue())

    x = [e.strength for e in effects]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.axhline(0, color="grey", lw=0.8)
    effect = np.array([e.effect for e in effects])
    ci = np.array([[e.ci_low for e in effects], [e.ci_high for e in effects]])
    ax.errorbar(
        x, effect, yerr=np.abs(ci - effect), fmt="o-", capsize=3, label="target - reference"
    )
    ax.plot(x, [e.target_delta for e in effects], "^--", lw=1, label="target")
    ax.plot(x, [e.reference_delta for e in effects], "v--", lw=1, label="reference")
    ax.set_xticks(x, [e.label for e in effects])
    ax.set_xlabel("intervention strength")
    ax.set_ylabel("change in mean log-prob (nats/token)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


@dataclass(frozen=True)
class Attribution:
    """Ablation effects of single SAE features on next-token loss, and their linear estimate.

    Attributes:
        features: [k] feature indices.
        ablation: [k] loss(feature i ablated) - loss (nats/token, mean over predicted tokens).
        attribution: [k] a_i = sum over edited positions of f_i(x) (d_i . dL/dx). Ablating i
            moves x by -f_i d_i, so -a_i is the first-order estimate of ``ablation``.
        pearson: Pearson correlation of ``ablation`` with -``attribution`` (nan if k < 3).
        spearman: Spearman correlation of the same (nan if k < 3).
        loss: the unablated loss (nats/token).
        n_tokens: number of predicted tokens the loss averages over.
    """

    features: np.ndarray
    ablation: np.ndarray
    attribution: np.ndarray
    pearson: float
    spearman: float
    loss: float
    n_tokens: int


def write_attribution(result: Attribution, csv_path: Path) -> None:
    """The per-feature table (feature, ablation, attribution, -attribution) as CSV."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["feature", "ablation_delta_loss", "attribution", "predicted_ablation"])
    for feature, abl, att in zip(result.features, result.ablation, result.attribution, strict=True):
        writer.writerow([int(feature), f"{abl:.6g}", f"{att:.6g}", f"{-att:.6g}"])
    write_text(csv_path, buf.getvalue())


def _token_losses(
    loaded: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Summed next-token loss (nats) of a right-padded batch [batch, seq]; scalar tensor."""
    logits = loaded.model(
        input_ids=input_ids, attention_mask=attention_mask, use_cache=False
    ).logits[:, :-1]
    losses = torch.nn.functional.cross_entropy(
        logits.float().transpose(1, 2), input_ids[:, 1:], reduction="none"
    )
    return (losses * attention_mask[:, 1:]).sum()


def corpus_batches(
    loaded: LoadedModel,
    corpus: Sequence[str | Path] = (),
    *,
    n_tokens: int = 2048,
    context_length: int = 128,
    batch_size: int = 8,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A corpus sample of at least ``n_tokens`` predicted tokens as packed chunks, batched.

    Returns ``(input_ids, attention_mask)`` pairs [batch, context_length]; an empty
    ``corpus`` means the default corpus.
    """
    n_chunks = -(-n_tokens // (context_length - 1))
    files = corpus_files(corpus)
    chunks = list(corpus_chunks(files, loaded.tokenizer, context_length, limit=n_chunks))
    if len(chunks) < n_chunks:
        raise CogsaeError(f"the corpus has fewer than {n_tokens} tokens", field="tokens")
    return list(token_batches(chunks, loaded.tokenizer, batch_size))


def ablation_attribution(
    loaded: LoadedModel,
    sae: SAE,
    features: Sequence[int],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    include_first: bool = False,
    progress: bool = True,
) -> Attribution:
    """Ablate each feature alone over a token sample; compare with gradient attribution.

    Args:
        loaded: the model (float32 recommended: bf16 rounding swamps small loss changes).
        sae: the SAE the features belong to.
        features: feature indices, e.g. the units of a run's SAE ensemble.
        batches: right-padded ``(input_ids, attention_mask)`` [batch, seq] pairs.
        include_first: also ablate (and attribute) position 0.
    """
    feats = list(features)
    directions = sae.decoder_directions[feats].detach().float()  # [k, d_model]
    n_tokens = int(sum(mask[:, 1:].sum() for _, mask in batches))
    first = 0 if include_first else 1
    clean = 0.0
    attribution = torch.zeros(len(feats), dtype=torch.float64)
    ablated = torch.zeros(len(feats), dtype=torch.float64)
    captured: list[torch.Tensor] = []

    def leaf(hidden: torch.Tensor) -> torch.Tensor:
        """Replace the block-L output by a leaf tensor, to take dL/dx there."""
        captured[:] = [hidden.detach().requires_grad_(True)]
        return captured[0]

    for input_ids, mask in tqdm(batches, desc="ablate", disable=not progress):
        input_ids, mask = input_ids.to(loaded.device), mask.to(loaded.device)
        with torch.enable_grad(), residual_hook(loaded, leaf):
            loss = _token_losses(loaded, input_ids, mask)
            (grad,) = torch.autograd.grad(loss, captured[0])
        clean += float(loss.detach())
        with torch.inference_mode():
            x = captured[0].detach()
            acts = sae.encode(x.to(directions.dtype))[..., feats].float()  # [batch, seq, k]
            proj = grad.float() @ directions.T  # [batch, seq, k]
            edited = mask.clone().float()
            edited[:, :first] = 0
            attribution += (acts * proj * edited[..., None]).sum((0, 1)).cpu()
            for j, feature in enumerate(feats):
                with intervene(loaded, [ablate(sae, [feature])], include_first=include_first):
                    ablated[j] += float(_token_losses(loaded, input_ids, mask))
    ablation = ((ablated - clean) / n_tokens).numpy()
    attribution = (attribution / n_tokens).numpy()
    if len(feats) >= 3:
        pearson = float(stats.pearsonr(ablation, -attribution).statistic)
        spearman = float(stats.spearmanr(ablation, -attribution).statistic)
    else:
        pearson = spearman = float("nan")
    return Attribution(
        np.array(feats), ablation, attribution, pearson, spearman, clean / n_tokens, n_tokens
    )
