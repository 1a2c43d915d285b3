"""The run's corpus stage: every method's final ensemble on corpus snippets, top examples judged.

The ensemble's decision value is read on sentence-sized corpus snippets
(`cogsae.corpus.scan_snippets`: 8-40 tokens, float16, cached; position 0 excluded, as
everywhere in cogsae); the decision of a snippet is the mean of its per-token decisions,
exactly as an item's decision is that of its window mean. An SAE-space ensemble encodes
the snippets' activations on the fly (`cogsae.sae.base.encode_batched`). The top snippets
of each method, with a per-token decision for highlighting, are judged for relevance to
the set's ``concept`` (`cogsae.judges.judge_examples`), beside the base rate: as many
snippets drawn at random from the same sample (once per run, shared by all methods), so
each method's relevance has an enrichment over it with a permutation p
(`cogsae.judges.enrichment`). On the Ray engine the same
snippets are scored shard by shard on actors (`cogsae.corpus.readout_scan`), with the same
examples bit for bit and without storing the residual.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cogsae import streams
from cogsae.analysis.ensemble import LinearModel, MethodResult
from cogsae.corpus import DEFAULT_SNIPPETS, CorpusScan, corpus_files, corpus_record, scan_snippets
from cogsae.corpus.readout_scan import ReadoutTop, SnippetTops, readout_scan, scan_tops
from cogsae.engine import Engine
from cogsae.errors import CogsaeError
from cogsae.judges import Judge, Relevance, judge_examples, make_judge
from cogsae.judges.enrichment import Enrichment, relevance_enrichment
from cogsae.model import LoadedModel
from cogsae.sae.base import SAE


@dataclass
class CorpusExample:
    """A top-scoring corpus snippet of one ensemble.

    Attributes:
        text: the snippet.
        decision: its decision value (mean of ``token_decisions`` over positions >= 1).
        tokens: its tokens, decoded one by one ("".join gives the text as tokenized).
        token_decisions: per-token decision value, None at position 0 (not read).
    """

    text: str
    decision: float
    tokens: list[str]
    token_decisions: list[float | None]


def top_examples(
    scan: CorpusScan,
    models: Mapping[str, LinearModel],
    tokenizer: Any,
    *,
    sae: SAE | None = None,
    n_top: int = 20,
) -> dict[str, list[CorpusExample]]:
    """The ``n_top`` snippets with the highest decision value, per ensemble.

    All ``models`` must be in one space: raw residual dimensions (``sae`` None) or the
    features of ``sae``; the activations of the union of their units are computed once.

    Args:
        scan: from `scan_snippets`.
        models: label (e.g. "sae:rsa_categorical") -> final ensemble.
        tokenizer: the scanned model's tokenizer (to decode the tokens).
    """
    n_units = scan.residual.shape[1] if sae is None else sae.cfg.d_sae
    used = np.unique(np.concatenate([m.units for m in models.values()]).astype(np.int64))
    if used.size and not 0 <= used.min() <= used.max() < n_units:
        raise CogsaeError(
            f"ensemble units out of range for a space of {n_units} units", field="ensemble"
        )
    tops = scan_tops(scan, {"raw" if sae is None else "sae": models}, sae, n_top)
    starts = scan.starts.tolist()
    ids = [scan.ids[starts[i] : starts[i + 1]].tolist() for i in range(len(starts) - 1)]
    return _examples(tops, scan.texts or [], ids, tokenizer)


def found_examples(found: SnippetTops, tokenizer: Any) -> dict[str, list[CorpusExample]]:
    """Label -> top examples of a `readout_scan`: what `top_examples` of the scan of the
    same snippets gives."""
    return _examples(found.tops, found.texts, found.ids, tokenizer)


def _examples(
    tops: Mapping[str, ReadoutTop],
    texts: Sequence[str],
    ids: Sequence[list[int]],
    tokenizer: Any,
) -> dict[str, list[CorpusExample]]:
    """Label -> the examples of its top snippets (``texts`` and token ``ids`` by snippet id);
    position 0 has no decision (it is not read)."""
    return {
        label: [
            CorpusExample(
                texts[i],
                float(decision),
                tokenizer.batch_decode([[t] for t in ids[i]]),
                [None, *map(float, per_token)],
            )
            for i, decision, per_token in zip(
                top.snippets, top.decisions, top.per_token, strict=True
            )
        ]
        for label, top in tops.items()
    }


@dataclass
class CorpusScore:
    """Top corpus examples of every method of a run, with their judged relevance.

    Attributes:
        n_snippets: snippets scanned.
        scan_key: cache key of the scan.
        examples: method label ("space:method") -> its top examples, best first.
        relevance: method label -> judged relevance; empty when no judge ran.
        judge: the judge's name, or None.
        files: the scanned corpus files by name and content hash (`corpus_record`).
        base: the random snippets of the base rate (as many as each method's examples).
        base_relevance: their judged relevance; None when no judge ran.
        enrichment: method label -> its relevance against ``base_relevance``.
    """

    n_snippets: int
    scan_key: str
    examples: dict[str, list[CorpusExample]]
    relevance: dict[str, Relevance]
    judge: str | None
    files: list[dict[str, str]]
    base: list[str]
    base_relevance: Relevance | None = None
    enrichment: dict[str, Enrichment] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """JSON-ready: ``{judge, n_snippets, scan_key, files, base: {mean_relevance, ci,
        examples: [{text, relevance}]}, methods: {label: {mean_relevance, ci,
        relevance_enrichment, relevance_p, examples: [{text, decision, relevance, tokens,
        token_decisions}]}}}`` (relevance fields None when not judged)."""
        methods = {}
        for label, examples in self.examples.items():
            judged = self.relevance.get(label)
            enriched = self.enrichment.get(label)
            methods[label] = {
                "mean_relevance": _finite(judged.mean) if judged else None,
                "ci": [_finite(x) for x in judged.ci] if judged else None,
                "relevance_enrichment": _finite(enriched.enrichment) if enriched else None,
                "relevance_p": _finite(enriched.p) if enriched else None,
                "examples": [
                    {
                        **asdict(example),
                        "relevance": int(judged.scores[i]) if judged else None,
                    }
                    for i, example in enumerate(examples)
                ],
            }
        judged = self.base_relevance
        base = {
            "mean_relevance": _finite(judged.mean) if judged else None,
            "ci": [_finite(x) for x in judged.ci] if judged else None,
            "examples": [
                {"text": text, "relevance": int(judged.scores[i]) if judged else None}
                for i, text in enumerate(self.base)
            ],
        }
        return {
            "judge": self.judge,
            "n_snippets": self.n_snippets,
            "scan_key": self.scan_key,
            "files": self.files,
            "base": base,
            "methods": methods,
        }


def _finite(x: float) -> float | None:
    """``x``, or None for NaN (JSON has no NaN)."""
    return None if np.isnan(x) else x


def score_corpus(
    methods: Sequence[MethodResult],
    loaded: LoadedModel,
    sae: SAE | None,
    *,
    concept: str,
    corpus: Sequence[str | Path] = (),
    n_snippets: int = DEFAULT_SNIPPETS,
    n_examples: int = 10,
    judge: str | Judge = "auto",
    n_bootstrap: int = 1000,
    seed: int = 0,
    engine: Engine = "local",
    workers: int | None = None,
    progress: bool = True,
) -> CorpusScore:
    """Scan a corpus with every method's final ensemble and judge its top examples against
    the base rate of as many random snippets of the sample (module doc).

    Args:
        methods: evaluated methods (their ``space`` "raw" or "sae", ``model`` and ``label``).
        loaded: the model and layer the ensembles read.
        sae: the SAE of the "sae" space (None if no method is in it).
        concept: the stimulus set's ``concept``.
        corpus: files to scan; empty = the default corpus.
        n_snippets: snippets scanned (`scan_snippets`, seeded by ``seed``).
        n_examples: top examples kept and judged per method.
        judge: a judge, a `JUDGES` name (`make_judge`), or "none" to skip judging.
        n_bootstrap: resamples for the CI of the mean relevance.
        engine: "local" reads the cached `scan_snippets`; "ray" scores the same snippets on
            ``workers`` Ray actors (`cogsae.corpus.readout_scan`), with the same examples.
    """
    spaces = {m.space for m in methods}
    if not spaces <= {"raw", "sae"}:
        raise CogsaeError(f"cannot scan unit spaces {sorted(spaces - {'raw', 'sae'})}")
    if "sae" in spaces and sae is None:
        raise CogsaeError("SAE-space ensembles need the SAE", field="sae")
    models = {s: {m.label: m.model for m in methods if m.space == s} for s in spaces}
    if engine == "local":
        scan = scan_snippets(loaded, corpus, n_snippets=n_snippets, seed=seed, progress=progress)
        key, found, sample = scan.key, {}, scan.texts or []
        for space, group in models.items():
            space_sae = sae if space == "sae" else None
            found |= top_examples(scan, group, loaded.tokenizer, sae=space_sae, n_top=n_examples)
    else:
        tops = readout_scan(
            loaded,
            sae if "sae" in spaces else None,
            models,
            corpus,
            n_snippets=n_snippets,
            seed=seed,
            n_top=n_examples,
            engine=engine,
            workers=workers,
            progress=progress,
        )
        key, found, sample = tops.key, found_examples(tops, loaded.tokenizer), tops.texts
    examples = {m.label: found[m.label] for m in methods}
    picks = streams.rng(seed, streams.Stream.RELEVANCE_BASE, 0).choice(
        len(sample), size=min(n_examples, len(sample)), replace=False
    )
    base = [sample[i] for i in sorted(picks.tolist())]
    score = CorpusScore(
        n_snippets, key, examples, {}, None, corpus_record(corpus_files(corpus)), base
    )
    if judge == "none":
        return score
    chosen = make_judge(judge, loaded) if isinstance(judge, str) else judge
    texts = {label: [e.text for e in group] for label, group in examples.items()}
    judged = judge_examples(
        chosen, concept, {**texts, _BASE: base}, n_bootstrap=n_bootstrap, seed=seed
    )
    score.base_relevance = judged.pop(_BASE)
    score.relevance, score.judge = judged, chosen.name
    score.enrichment = {
        label: relevance_enrichment(
            rel.scores,
            score.base_relevance.scores,
            streams.rng(seed, streams.Stream.RELEVANCE_BASE, 1),
        )
        for label, rel in judged.items()
    }
    return score


_BASE = "base rate"
"""Key of the random snippets among the judged groups (method labels are "space:method")."""
