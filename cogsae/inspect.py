"""Inspect a unit: what it responds to in a corpus and what it writes to the output.

A unit is an SAE feature, a raw residual dimension, or a run's ensemble (a linear
readout of k units). Inspection scans a corpus sample once at layer L
(`cogsae.corpus.scan_chunks`, cached on disk), reads the unit's activation at every
token (position 0 of each chunk excluded, as everywhere in cogsae) and reports:

- density (fraction of tokens with activation > 0) and a histogram of the nonzero values;
- top-activating examples (at most one per chunk) and examples from quantile bins of the
  active values, each a token window with per-token activations;
- for an SAE feature, the same page from a corpus-wide `FeatureScan` (millions of
  tokens, local or Ray; `inspect_feature_scan`): density over every scanned token, the
  scan's top examples, quantiles and bins from its quantile sample;
- the logit lens of the unit's direction: ``(g * direction) @ W_U^T``, with ``g`` the
  final RMSNorm weight. The final norm multiplies each dimension by ``g`` before the
  unembedding; its other factor, 1/rms(x), is one positive scalar per position and does
  not change the ranking of tokens, so this is the direction's direct effect on the
  logits, up to scale (it ignores the blocks after L).
"""

from __future__ import annotations

import base64
import html
import io
import itertools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from cogsae import streams
from cogsae._io import (
    atomic_path,
    cache_dir,
    load_cache,
    read_checked,
    write_checked,
    write_json,
    write_text,
)
from cogsae.analysis.ensemble import LinearModel
from cogsae.corpus import CorpusScan, residual_batches
from cogsae.corpus.feature_scan import FeatureScan, chunk_tokens
from cogsae.errors import CogsaeError
from cogsae.model import LoadedModel
from cogsae.sae.base import SAE, encode_batched

# --------------------------------------------------------------------------- SAE codes


@torch.inference_mode()
def sae_codes(
    scan: CorpusScan, sae: SAE, *, batch_size: int = 2048, cache: bool = True
) -> scipy.sparse.csc_array:
    """SAE feature activations over a scan, sparse [N, d_sae] float32, cached by (scan, SAE)."""
    path = cache_dir() / "scans" / f"{scan.key}-sae-{sae.fingerprint()}.npz"
    cached = (
        load_cache(path, lambda p: scipy.sparse.load_npz(io.BytesIO(read_checked(p))))
        if cache
        else None
    )
    if cached is not None:
        return scipy.sparse.csc_array(cached)
    codes = scipy.sparse.csc_array(encode_batched(sae, scan.residual, batch_size, sparse=True))
    if cache:
        buf = io.BytesIO()
        scipy.sparse.save_npz(buf, codes)
        write_checked(path, buf.getvalue())
    return codes


def feature_maxima(codes: scipy.sparse.csc_array) -> np.ndarray:
    """[d_sae] largest activation of each feature over the scan (0 for dead features)."""
    return np.asarray(codes.max(axis=0).toarray()).ravel()


# --------------------------------------------------------------------------- readouts


@dataclass(frozen=True)
class Ensemble:
    """A run's fitted ensemble: a results.json method entry's ``final_model``.

    Attributes:
        method: selection method name, as in results.json.
        space: "sae" (units are SAE features) or "raw" (residual dimensions).
        model: its readout (`cogsae.analysis.ensemble.LinearModel`: units, standardization,
            coefficients; decision = a[units] @ weights + bias on the units' activations a).
    """

    method: str
    space: str
    model: LinearModel

    @property
    def units(self) -> list[int]:
        """[k] unit indices."""
        return [int(u) for u in self.model.units]

    def score(self, acts: np.ndarray) -> np.ndarray:
        """[n] ensemble score (logit) from the units' activations [n, k]."""
        return acts @ self.model.weights + self.model.bias

    def direction(self, d_model: int, sae: SAE | None = None) -> torch.Tensor:
        """[d_model] model-space direction that raises the score: sum_i weight_i * e_i.

        e_i is the one-hot of residual dimension i (raw space) or the decoder direction of
        feature i (SAE space, ``sae`` needed).
        """
        weight = torch.from_numpy(np.asarray(self.model.weights, dtype=np.float32))  # [k]
        if self.space == "raw":
            return torch.zeros(d_model).index_add_(0, torch.tensor(self.units), weight)
        if sae is None:
            raise CogsaeError("an SAE-space ensemble needs its SAE (--sae)", field="sae")
        return weight @ sae.decoder_directions[self.units].detach().float().cpu()


def load_ensemble(spec: str) -> Ensemble:
    """The ensemble named by ``"RESULTS.json:METHOD:SPACE"`` (a `cogsae run` result).

    METHOD is read in the run's primary concept; ``METHOD@FACTOR`` names another factor's
    concept of a factorial set (e.g. ``rsa_categorical@tense``).
    """
    import json

    parts = spec.rsplit(":", 2)
    if len(parts) != 3:
        raise CogsaeError(f"expected RESULTS.json:METHOD:SPACE, got {spec!r}", field="ensemble")
    path, (method, _, factor), space = Path(parts[0]), parts[1].partition("@"), parts[2]
    if not path.is_file():
        raise CogsaeError("results file not found", path=path, field="ensemble")
    concepts = json.loads(path.read_text(encoding="utf-8")).get("concepts", [])
    chosen = [c for c in concepts if c.get("factor") == factor] if factor else concepts[:1]
    if not chosen:
        known = ", ".join(str(c.get("factor")) for c in concepts)
        raise CogsaeError(f"no concept {factor!r} (has: {known})", path=path, field="ensemble")
    entries = chosen[0].get("methods", [])
    found = [e for e in entries if e.get("method") == method and e.get("space") == space]
    if not found or "final_model" not in found[0]:
        known = ", ".join(f"{e.get('method')}:{e.get('space')}" for e in entries)
        raise CogsaeError(
            f"no method {method}:{space} in the results (has: {known})",
            path=path,
            field="ensemble",
        )
    fm = found[0]["final_model"]
    model = LinearModel(
        units=np.asarray(fm["units"], dtype=np.int64),
        mean=np.asarray(fm["mean"], dtype=np.float64),
        scale=np.asarray(fm["scale"], dtype=np.float64),
        coef=np.asarray(fm["coef"], dtype=np.float64),
        intercept=float(fm["intercept"]),
    )
    return Ensemble(method, space, model)


@dataclass(frozen=True)
class Readout:
    """One inspected unit over a scan.

    Attributes:
        label: human-readable name ("SAE feature 123", "raw unit 7", "ensemble rsa:sae").
        values: [N] activation at each scanned token.
        direction: [d_model] float32 model-space direction the unit writes / is steered along.
    """

    label: str
    values: np.ndarray
    direction: torch.Tensor


def feature_direction(sae: SAE, feature: int) -> torch.Tensor:
    """[d_model] float32 model-space decoder direction of SAE feature ``feature``."""
    n_features = sae.decoder_directions.shape[0]
    if not 0 <= feature < n_features:
        raise CogsaeError(f"feature {feature} out of range 0..{n_features - 1}", field="feature")
    return sae.decoder_directions[feature].detach().float().cpu()


def unit_direction(d_model: int, unit: int) -> torch.Tensor:
    """[d_model] float32 one-hot direction of raw residual dimension ``unit``."""
    if not 0 <= unit < d_model:
        raise CogsaeError(f"unit {unit} out of range 0..{d_model - 1}", field="unit")
    return torch.zeros(d_model).index_fill_(0, torch.tensor([unit]), 1.0)


def feature_readout(codes: scipy.sparse.csc_array, sae: SAE, feature: int) -> Readout:
    """SAE feature ``feature``: its activations and its decoder direction."""
    direction = feature_direction(sae, feature)
    return Readout(f"SAE feature {feature}", codes[:, [feature]].toarray().ravel(), direction)


def unit_readout(scan: CorpusScan, unit: int) -> Readout:
    """Raw residual dimension ``unit``: its values and its one-hot direction."""
    direction = unit_direction(scan.residual.shape[1], unit)
    return Readout(f"raw unit {unit}", scan.residual[:, unit].float().numpy(), direction)


def ensemble_readout(
    scan: CorpusScan,
    ensemble: Ensemble,
    sae: SAE | None = None,
    codes: scipy.sparse.csc_array | None = None,
) -> Readout:
    """A run's ensemble applied per token (score > 0: classified as the target condition)."""
    if ensemble.space == "raw":
        acts = scan.residual[:, list(ensemble.units)].float().numpy()
    elif codes is None:
        raise CogsaeError("an SAE-space ensemble needs its SAE (--sae)", field="sae")
    else:
        acts = codes[:, list(ensemble.units)].toarray()
    return Readout(
        f"ensemble {ensemble.method}:{ensemble.space}",
        ensemble.score(acts),
        ensemble.direction(scan.residual.shape[1], sae),
    )


# --------------------------------------------------------------------------- inspection


@dataclass(frozen=True)
class LogitLens:
    """Output tokens a direction promotes and suppresses directly.

    Attributes:
        positive: (token, score) of the highest ``(g * direction) @ W_U^T`` entries.
        negative: (token, score) of the lowest, most negative first.
    """

    positive: list[tuple[str, float]]
    negative: list[tuple[str, float]]


@torch.inference_mode()
def logit_lens(loaded: LoadedModel, direction: torch.Tensor, k: int = 10) -> LogitLens:
    """Top-``k`` promoted and suppressed tokens of ``direction`` [d_model] (module doc)."""
    norm_weight = loaded.model.model.norm.weight.float().cpu()
    unembed = loaded.model.get_output_embeddings().weight.float().cpu()  # [vocab, d_model]
    scores = unembed @ (norm_weight * direction.float().cpu())
    top, bottom = scores.topk(k), (-scores).topk(k)

    def named(ids: torch.Tensor, vals: torch.Tensor) -> list[tuple[str, float]]:
        tokens = loaded.tokenizer.batch_decode([[int(i)] for i in ids])
        return [(t, float(v)) for t, v in zip(tokens, vals, strict=True)]

    return LogitLens(named(top.indices, top.values), named(bottom.indices, -bottom.values))


@dataclass(frozen=True)
class Example:
    """A corpus excerpt around one token.

    Attributes:
        tokens: the window's token strings.
        values: activation of each window token (None for position 0 of a chunk, unscanned).
        focus: index into ``tokens`` of the token the example was chosen for.
        value: activation at the focus token.
    """

    tokens: list[str]
    values: list[float | None]
    focus: int
    value: float


@dataclass(frozen=True)
class Inspection:
    """What one unit responds to over a corpus sample and what it writes.

    Attributes:
        label: the readout's label.
        context: model, layer, SAE and corpus scan it was measured on.
        n_tokens: scanned tokens.
        density: fraction of tokens with activation > 0.
        max: largest activation.
        quantiles: activation at quantiles 0.5, 0.9, 0.99 of the active tokens.
        top: top-activating examples (at most one per chunk), strongest first.
        by_quantile: (bin label, examples) for quartile bins of the active activations.
        lens: logit lens of the unit's direction.
    """

    label: str
    context: dict[str, str | int]
    n_tokens: int
    density: float
    max: float
    quantiles: dict[str, float]
    top: list[Example]
    by_quantile: list[tuple[str, list[Example]]]
    lens: LogitLens


def inspect_readout(
    loaded: LoadedModel,
    scan: CorpusScan,
    readout: Readout,
    *,
    context: dict[str, str | int] | None = None,
    n_top: int = 12,
    n_per_bin: int = 4,
    before: int = 12,
    after: int = 4,
    seed: int = 0,
) -> Inspection:
    """Density, examples (top and per quartile bin) and logit lens of a readout.

    Args:
        before: window tokens shown before the focus token (within its chunk).
        after: window tokens shown after it.
        seed: picks the random examples inside each quantile bin.
    """
    values = readout.values
    example = _example_maker(loaded, scan, values, before, after)
    chunk_of = np.searchsorted(scan.starts.numpy(), scan.token_index(), side="right") - 1
    top_rows: list[int] = []
    seen: set[int] = set()
    for row in np.argsort(-values, kind="stable"):
        if len(top_rows) == n_top or values[row] <= 0:
            break
        if chunk_of[row] not in seen:
            seen.add(chunk_of[row])
            top_rows.append(int(row))

    active = np.flatnonzero(values > 0)
    bins = _quantile_bins(values[active], n_per_bin, seed)
    return Inspection(
        label=readout.label,
        context=dict(context or {}),
        n_tokens=len(values),
        density=float(len(active) / len(values)),
        max=float(values.max()),
        quantiles=_quantiles(values[active]),
        top=[example(r) for r in top_rows],
        by_quantile=[(label, [example(int(r)) for r in active[picks]]) for label, picks in bins],
        lens=logit_lens(loaded, readout.direction),
    )


def _example_maker(
    loaded: LoadedModel, scan: CorpusScan, values: np.ndarray, before: int, after: int
) -> Callable[[int], Example]:
    """Row of ``scan.residual`` -> its `Example`: the window of ``before`` / ``after``
    tokens around it within its chunk, with ``values`` [N] (one per row) per token."""
    index = scan.token_index()
    chunk_of = np.searchsorted(scan.starts.numpy(), index, side="right") - 1  # [N]
    per_token = np.full(len(scan.ids), np.nan)
    per_token[index] = values
    starts = scan.starts.numpy()

    def example(row: int) -> Example:
        t, c = index[row], chunk_of[row]
        lo, hi = max(starts[c], t - before), min(starts[c + 1], t + after + 1)
        tokens = loaded.tokenizer.batch_decode([[int(i)] for i in scan.ids[lo:hi]])
        window = [None if np.isnan(v) else float(v) for v in per_token[lo:hi]]
        return Example(tokens, window, int(t - lo), float(values[row]))

    return example


def _quantile_bins(active: np.ndarray, n_per_bin: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """(label, picks) per quartile bin of the active values [n], highest bin first:
    ``n_per_bin`` seeded random indices into ``active`` from the bin, strongest first."""
    rng = streams.rng(seed, streams.Stream.EXAMPLE_SAMPLE)
    bins = []
    if len(active):
        edges = np.quantile(active, [0, 0.25, 0.5, 0.75, 1])
        for q, (lo, hi) in enumerate(itertools.pairwise(edges)):
            in_bin = np.flatnonzero((active >= lo) & (active <= hi))
            picks = rng.choice(in_bin, min(n_per_bin, len(in_bin)), replace=False)
            picks = picks[np.argsort(-active[picks])]
            bins.append((f"q{25 * q}-{25 * (q + 1)} ({lo:.3g} .. {hi:.3g})", picks))
    return bins[::-1]


def _quantiles(active: np.ndarray) -> dict[str, float]:
    """Quantiles 0.5, 0.9, 0.99 of the active values [n] ({} when there are none)."""
    if not len(active):
        return {}
    levels = (0.5, 0.9, 0.99)
    return {str(q): float(v) for q, v in zip(levels, np.quantile(active, levels), strict=True)}


@torch.inference_mode()
def inspect_feature_scan(
    loaded: LoadedModel,
    sae: SAE,
    scan: FeatureScan,
    feature: int,
    corpus: Sequence[str | Path] = (),
    *,
    context: dict[str, str | int] | None = None,
    n_top: int = 12,
    n_per_bin: int = 4,
    window: tuple[int, int] = (12, 4),
    seed: int = 0,
    batch_size: int = 16,
) -> tuple[Inspection, np.ndarray]:
    """Inspection of SAE feature ``feature`` from a corpus-wide `FeatureScan`
    (`cogsae.corpus.feature_scan.feature_scan`, local or Ray).

    Density is over every scanned token; the top examples are the scan's; quantiles and
    quartile-bin examples come from its quantile sample. Only the chunks shown are read
    again (by chunk id, from ``corpus``, the scan's corpus) and re-run through the model
    and SAE for the per-token values of their windows. Returns the inspection and the
    sampled active values [<= n_sample] (for `write_inspection`'s histogram).
    ``window``: tokens shown before and after the focus token (``before``, ``after`` of
    `inspect_readout`).
    """
    direction = feature_direction(sae, feature)
    top_values, top_chunks, top_positions = (a[:n_top] for a in scan.top(feature))
    sample_values, sample_chunks, sample_positions = scan.sample(feature)
    bins = _quantile_bins(sample_values, n_per_bin, seed)
    picked = np.concatenate([picks for _, picks in bins] or [np.zeros(0, dtype=int)])
    wanted = sorted({*top_chunks.tolist(), *sample_chunks[picked].tolist()})
    found = chunk_tokens(scan, corpus, loaded.tokenizer, wanted)
    segments = [found[c] for c in wanted]
    residual = torch.cat(
        [r.cpu() for r in residual_batches(loaded, segments, batch_size)]
        or [torch.zeros(0, loaded.d_model)]
    )
    lengths = torch.tensor([0] + [len(c) for c in segments])
    shown = CorpusScan(
        torch.cat(segments or [torch.zeros(0, dtype=torch.long)]), lengths.cumsum(0), residual, ""
    )
    values = encode_batched(sae, residual, 4096, units=[feature]).numpy().ravel()
    example = _example_maker(loaded, shown, values, *window)
    first_row = shown.rows.numpy()

    def at(chunk: int, position: int) -> Example:
        return example(int(first_row[wanted.index(chunk)] + position - 1))

    return Inspection(
        label=f"SAE feature {feature}",
        context=dict(context or {}),
        n_tokens=scan.n_tokens,
        density=float(scan.density[feature]),
        max=float(top_values[0]) if len(top_values) else 0.0,
        quantiles=_quantiles(sample_values),
        top=[at(c, p) for c, p in zip(top_chunks, top_positions, strict=True)],
        by_quantile=[
            (label, [at(sample_chunks[i], sample_positions[i]) for i in picks])
            for label, picks in bins
        ],
        lens=logit_lens(loaded, direction),
    ), sample_values


# --------------------------------------------------------------------------- rendering


def histogram_png(
    values: np.ndarray, label: str, n_tokens: int | None = None, density: float | None = None
) -> bytes:
    """PNG of the histogram of the nonzero ``values`` (log count axis); the title gives
    ``n_tokens`` and ``density`` (default: those of ``values``, all tokens' activations;
    a `FeatureScan` page passes its sample with the scan's figures)."""
    from matplotlib.figure import Figure

    nonzero = values[values != 0]
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    ax.hist(nonzero, bins=60, color="#d9480f")
    ax.set_yscale("log")
    ax.set_xlabel("activation")
    ax.set_ylabel("tokens")
    ax.set_title(
        f"{label}: nonzero values of {len(values) if n_tokens is None else n_tokens} tokens; "
        f"density (> 0) {np.mean(values > 0) if density is None else density:.4f}",
        fontsize=9,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _show(token: str) -> str:
    return token.replace("\n", "\u21b5")


def _text_example(ex: Example) -> str:
    """One line: the window with the focus token in guillemets."""
    return "".join(
        f"\u00ab{_show(t)}\u00bb" if i == ex.focus else _show(t) for i, t in enumerate(ex.tokens)
    )


def summary(ins: Inspection, n_examples: int = 5) -> str:
    """Short plain-text summary: statistics, logit lens and the strongest examples."""
    ctx = ", ".join(f"{k} {v}" for k, v in ins.context.items())
    lines = [
        f"{ins.label} ({ctx})" if ctx else ins.label,
        f"  density {ins.density:.4g} over {ins.n_tokens} tokens, max {ins.max:.4g}, "
        + ", ".join(f"q{k} {v:.3g}" for k, v in ins.quantiles.items()),
        "  promotes: " + " ".join(repr(t) for t, _ in ins.lens.positive),
        "  suppresses: " + " ".join(repr(t) for t, _ in ins.lens.negative),
        "  top examples:",
        *(f"  {ex.value:9.3f}  {_text_example(ex)}" for ex in ins.top[:n_examples]),
    ]
    return "\n".join(lines)


def _html_example(ex: Example, scale: float) -> str:
    spans = []
    for i, (token, value) in enumerate(zip(ex.tokens, ex.values, strict=True)):
        alpha = 0.0 if value is None or scale <= 0 else min(abs(value) / scale, 1.0)
        rgb = "217,72,15" if (value or 0) >= 0 else "28,126,214"
        border = "border-bottom:2px solid #000;" if i == ex.focus else ""
        title = "position 0 (not scanned)" if value is None else f"{value:.4g}"
        spans.append(
            f'<span title="{title}" style="background:rgba({rgb},{alpha:.2f});{border}'
            f'white-space:pre-wrap">{html.escape(_show(token))}</span>'
        )
    return (
        f'<div style="font-family:monospace;margin:3px 0"><b style="display:inline-block;'
        f'width:6em">{ex.value:.3f}</b>{"".join(spans)}</div>'
    )


def render_html(ins: Inspection, png: bytes) -> str:
    """Self-contained HTML page (inline styles, histogram embedded as base64)."""
    scale = max(abs(ins.max), 1e-12)
    esc = html.escape

    def lens_row(items: list[tuple[str, float]]) -> str:
        return " ".join(
            f'<code style="background:#eee;padding:1px 3px">{esc(repr(t))}</code> {v:.2f}'
            for t, v in items
        )

    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(ins.label)}</title>"
        "</head><body style='font-family:sans-serif;max-width:1100px;margin:auto'>",
        f"<h1>{esc(ins.label)}</h1>",
        f"<p>{esc(', '.join(f'{k}: {v}' for k, v in ins.context.items()))}</p>",
        f"<p>density <b>{ins.density:.4g}</b> over {ins.n_tokens} tokens; max <b>{ins.max:.4g}"
        "</b>; "
        + esc(", ".join(f"quantile {k} of active: {v:.3g}" for k, v in ins.quantiles.items()))
        + "</p>",
        f"<img alt='histogram' src='data:image/png;base64,{base64.b64encode(png).decode()}'>",
        "<h2>Logit lens (final-norm weight, then unembedding)</h2>",
        f"<p>promotes: {lens_row(ins.lens.positive)}</p>",
        f"<p>suppresses: {lens_row(ins.lens.negative)}</p>",
        "<h2>Top-activating examples</h2>",
        *(_html_example(ex, scale) for ex in ins.top),
    ]
    for label, examples in ins.by_quantile:
        parts.append(f"<h3>Active tokens, {esc(label)}</h3>")
        parts.extend(_html_example(ex, scale) for ex in examples)
    parts.append("</body></html>")
    return "\n".join(parts)


def write_inspection(ins: Inspection, values: np.ndarray, out_dir: Path) -> Path:
    """Write index.html, histogram.png (of ``values``: every token's activation, or a
    `FeatureScan`'s sample), summary.txt and inspection.json; return the HTML path."""
    png = histogram_png(values, ins.label, ins.n_tokens, ins.density)
    with atomic_path(out_dir / "histogram.png") as tmp:
        tmp.write_bytes(png)
    write_text(out_dir / "summary.txt", summary(ins, n_examples=len(ins.top)) + "\n")
    write_json(out_dir / "inspection.json", asdict(ins))
    write_text(out_dir / "index.html", render_html(ins, png))
    return out_dir / "index.html"
