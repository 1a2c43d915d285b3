"""One way from a corpus to layer-L activations: segments -> batches -> blocks 0..L -> rows.

A scan runs corpus segments through blocks 0..L of the model and keeps the residual of
every token except each segment's position 0 (the attention sink, docs/methods.md,
"Windows and masks"). Segments are either

- document chunks (`scan_chunks`): the first tokens of a corpus, each document cut into
  chunks of <= ``context_length`` tokens, never mixed; stored in the model's dtype
  (inspection reads them), or
- sentence snippets (`scan_snippets`): a seeded sample of sentence-sized snippets
  (`sample_snippets`); stored as float16 (the run's corpus scoring reads them).

Both go through one loop (`_run_segments`: sorted by length, batched, per-segment rows)
and one cache: ``<cache>/scans/<model>-L<layer>-<kind>-<key>.safetensors``, written
atomically behind a checksum (`cogsae._io.write_checked`), keyed by (model name and
weights, layer, dtype, corpus content, segment settings, cogsae version) and rebuilt
with a one-line warning if it is broken or holds another key.

The other corpus readers (SAE training shards, SAE metrics, ablation attribution) take
their packed chunks from `corpus_chunks` and their batches from `token_batches` /
`residual_batches`, the same helpers the scans use.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from tqdm.auto import tqdm

from cogsae import streams
from cogsae._io import (
    CacheError,
    cache_dir,
    load_cache,
    read_checked,
    safe_name,
    stable_hash,
    write_checked,
)
from cogsae.corpus.sources import (
    Subset,
    batch_chunks,
    corpus_files,
    files_hash,
    iter_documents,
    iter_token_chunks,
    length_sorted_batches,
    select_documents,
)
from cogsae.errors import CogsaeError
from cogsae.model import LoadedModel, model_fingerprint
from cogsae.version import __version__

DEFAULT_SNIPPETS = 1000
"""Snippets scanned by default: ~15k tokens, ~57 CPU-seconds for SmolLM2-135M at layer 15."""

SNIPPET_TOKENS = (8, 40)
"""Default token bounds (min, max) of a sampled snippet."""
SNIPPET_BATCH = 64
"""Snippets per forward pass of a snippet scan."""

# A document is cut into snippets after sentence-ending punctuation (and semicolons,
# which separate the definition and examples of a WordNet gloss).
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")

Segments = tuple[list[torch.Tensor], list[str] | None]
"""Token ids [length] (int64) of each segment, and its text when the segments are snippets."""


# --------------------------------------------------------------------------- model batches


def residual_tokens(
    loaded: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Layer-L activations of real tokens at positions >= 1, flattened to [n, d_model]."""
    return layer_tokens(loaded, input_ids, attention_mask, [loaded.layer])[loaded.layer]


def layer_tokens(
    loaded: LoadedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layers: Sequence[int],
) -> dict[int, torch.Tensor]:
    """`residual_tokens` at each of ``layers`` from one forward pass: layer -> [n, d_model]."""
    keep = attention_mask.bool().clone()
    keep[:, 0] = False
    hidden = loaded.residuals(input_ids, attention_mask, layers)
    return {layer: h[keep] for layer, h in hidden.items()}


def corpus_chunks(
    paths: Sequence[str | Path],
    tokenizer: Any,
    context_length: int = 128,
    *,
    subset: Subset = "all",
    pack: bool = True,
    limit: int | None = None,
) -> Iterator[torch.Tensor]:
    """Token chunks [<= context_length] of the ``subset`` documents of corpus files, the
    first ``limit`` of them (all when None): `iter_token_chunks` of `select_documents`."""
    documents = select_documents(iter_documents(paths), subset)
    return itertools.islice(iter_token_chunks(documents, tokenizer, context_length, pack), limit)


def token_batches(
    chunks: Iterable[torch.Tensor], tokenizer: Any, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Right-padded CPU ``(input_ids, attention_mask)`` [batch, seq] of consecutive chunks,
    padded with the tokenizer's pad id (0 if it has none)."""
    return batch_chunks(chunks, batch_size, pad_id(tokenizer))


def pad_id(tokenizer: Any) -> int:
    """The id a batch is padded with: the tokenizer's pad id, else 0."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def residual_batches(
    loaded: LoadedModel, chunks: Iterable[torch.Tensor], batch_size: int
) -> Iterator[torch.Tensor]:
    """Per batch of consecutive chunks: `residual_tokens` [tokens, d_model] on the model's
    device, the chunks' positions >= 1 in chunk order."""
    for batch in layer_batches(loaded, chunks, batch_size, [loaded.layer]):
        yield batch[loaded.layer]


def layer_batches(
    loaded: LoadedModel, chunks: Iterable[torch.Tensor], batch_size: int, layers: Sequence[int]
) -> Iterator[dict[int, torch.Tensor]]:
    """`residual_batches` at several ``layers``, one forward pass per batch: per batch,
    layer -> [tokens, d_model]."""
    for input_ids, mask in token_batches(chunks, loaded.tokenizer, batch_size):
        yield layer_tokens(loaded, input_ids.to(loaded.device), mask.to(loaded.device), layers)


# --------------------------------------------------------------------------- scans


@dataclass
class CorpusScan:
    """Layer-L residual stream of S corpus segments (document chunks or snippets).

    Attributes:
        ids: [T] int64 token ids of all segments, concatenated (position 0 included).
        starts: [S + 1] int64 offset of each segment into ``ids`` (last = T).
        residual: [T - S, d_model] activations of every token except each segment's
            position 0, in ``ids`` order (float16 for snippets, else the model's dtype).
        key: cache key (model, layer, dtype, corpus content, segment settings).
        texts: [S] the snippets' texts; None for document chunks.
    """

    ids: torch.Tensor
    starts: torch.Tensor
    residual: torch.Tensor
    key: str
    texts: list[str] | None = None

    @property
    def n_segments(self) -> int:
        return len(self.starts) - 1

    @property
    def n_tokens(self) -> int:
        """Scanned tokens (rows of ``residual``)."""
        return int(self.residual.shape[0])

    @property
    def rows(self) -> torch.Tensor:
        """[S + 1] offset of each segment's first row into ``residual``."""
        return self.starts - torch.arange(len(self.starts))

    def token_index(self) -> np.ndarray:
        """[T - S] index into ``ids`` of each residual row."""
        first = np.zeros(len(self.ids), dtype=bool)
        first[self.starts[:-1].numpy()] = True
        return np.flatnonzero(~first)


def scan_chunks(
    loaded: LoadedModel,
    corpus: Sequence[str | Path] = (),
    *,
    n_tokens: int = 20_000,
    context_length: int = 128,
    batch_size: int = 16,
    cache: bool = True,
    progress: bool = True,
) -> CorpusScan:
    """Residual (model dtype) of the first ``n_tokens`` scanned tokens of a corpus.

    Args:
        loaded: the model and layer.
        corpus: text / .jsonl files (`cogsae.corpus.iter_documents`); empty = the default corpus.
        n_tokens: scanned tokens (position 0 of each chunk is run but not counted).
        context_length: longest chunk, in tokens; documents are never mixed in one chunk.
    """
    paths = corpus_files(corpus)
    return _scan(
        loaded,
        paths,
        "chunks",
        (n_tokens, context_length),
        lambda: (document_chunks(paths, loaded.tokenizer, n_tokens, context_length), None),
        batch_size=batch_size,
        dtype=None,
        cache=cache,
        progress=progress,
    )


def scan_snippets(
    loaded: LoadedModel,
    corpus: Sequence[str | Path] = (),
    *,
    n_snippets: int = DEFAULT_SNIPPETS,
    min_tokens: int = SNIPPET_TOKENS[0],
    max_tokens: int = SNIPPET_TOKENS[1],
    seed: int = 0,
    batch_size: int = SNIPPET_BATCH,
    cache: bool = True,
    progress: bool = True,
) -> CorpusScan:
    """Float16 residual of ``n_snippets`` sampled corpus snippets (`sample_snippets`).

    Args:
        loaded: the model and layer.
        corpus: text / .jsonl files; empty = the default corpus (the default SAE's text).
    """
    paths = corpus_files(corpus)
    settings = snippet_settings(n_snippets, min_tokens, max_tokens, seed)

    def segments() -> Segments:
        texts, ids = sample_snippets(
            paths,
            loaded.tokenizer,
            n_snippets,
            min_tokens=min_tokens,
            max_tokens=max_tokens,
            seed=seed,
        )
        return [torch.tensor(x) for x in ids], texts

    return _scan(
        loaded,
        paths,
        "snippets",
        settings,
        segments,
        batch_size=batch_size,
        dtype=torch.float16,
        cache=cache,
        progress=progress,
    )


def _scan(
    loaded: LoadedModel,
    paths: Sequence[Path],
    kind: str,
    settings: tuple[Any, ...],
    segments: Callable[[], Segments],
    *,
    batch_size: int,
    dtype: torch.dtype | None,
    cache: bool,
    progress: bool,
) -> CorpusScan:
    """The cached scan of ``kind`` (its ``settings`` key it; ``dtype`` None = the model's),
    or a new one of ``segments()`` written to the cache."""
    key = scan_key(loaded, paths, settings)
    name = f"{safe_name(loaded.name)}-L{loaded.layer}-{kind}-{key}.safetensors"
    path = cache_dir() / "scans" / name
    cached = load_cache(path, lambda p: _read_scan(p, key)) if cache else None
    if cached is not None:
        return cached
    chunks, texts = segments()
    bar = tqdm(
        total=sum(len(c) - 1 for c in chunks),
        desc=f"scan {kind} L{loaded.layer}",
        unit="tok",
        disable=not progress,
    )
    rows = _run_segments(loaded, chunks, batch_size, dtype, bar.update)
    bar.close()
    lengths = torch.tensor([0] + [len(c) for c in chunks])
    scan = CorpusScan(
        torch.cat(chunks), lengths.cumsum(0), torch.cat(rows).contiguous(), key, texts
    )
    if cache:
        _write_scan(path, scan)
    return scan


def snippet_settings(
    n_snippets: int, min_tokens: int, max_tokens: int, seed: int
) -> tuple[Any, ...]:
    """What keys a snippet sample besides the model and corpus (`scan_snippets`)."""
    return (n_snippets, min_tokens, max_tokens, seed, streams.Stream.SNIPPET_SAMPLE.tag)


def scan_key(loaded: LoadedModel, paths: Sequence[Path], settings: tuple[Any, ...]) -> str:
    """Key of a scan of ``paths`` by ``loaded`` under ``settings`` (model name and weights,
    layer, dtype, corpus content, segment settings, cogsae version)."""
    return stable_hash(
        loaded.name,
        model_fingerprint(loaded),
        loaded.layer,
        str(loaded.dtype),
        files_hash(paths),
        *settings,
        __version__,
    )


def batch_rows(
    loaded: LoadedModel, input_ids: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype | None
) -> torch.Tensor:
    """`residual_tokens` [tokens, d_model] of one padded batch, on the CPU in ``dtype`` (None:
    the model's): the rows a scan stores, so every reader of them sees the same floats."""
    flat = residual_tokens(loaded, input_ids.to(loaded.device), mask.to(loaded.device))
    return flat.to(dtype or flat.dtype).cpu()


def _run_segments(
    loaded: LoadedModel,
    segments: Sequence[torch.Tensor],
    batch_size: int,
    dtype: torch.dtype | None,
    done: Callable[[int], Any],
) -> list[torch.Tensor]:
    """Per segment [length]: its residual rows [length - 1, d_model] (CPU, ``dtype`` or the
    model's), run in batches of similar length; ``done(tokens)`` after each batch."""
    rows: list[torch.Tensor] = [torch.empty(0)] * len(segments)
    pad = pad_id(loaded.tokenizer)
    for members, input_ids, mask in length_sorted_batches(segments, batch_size, pad):
        flat = batch_rows(loaded, input_ids, mask, dtype)
        parts = flat.split([len(segments[i]) - 1 for i in members])
        for i, part in zip(members, parts, strict=True):
            rows[i] = part
        done(len(flat))
    return rows


def _write_scan(path: Path, scan: CorpusScan) -> None:
    """Store ``scan`` as checksummed safetensors; key and texts in a JSON ``meta`` tensor."""
    meta = json.dumps({"key": scan.key, "texts": scan.texts}).encode()
    tensors = {
        "ids": scan.ids,
        "starts": scan.starts,
        "residual": scan.residual,
        "meta": torch.frombuffer(bytearray(meta), dtype=torch.uint8),
    }
    write_checked(path, safetensors.torch.save(tensors))


def _read_scan(path: Path, key: str) -> CorpusScan:
    """The scan `_write_scan` stored at ``path``; CacheError if it has another key."""
    data = safetensors.torch.load(read_checked(path))
    meta = json.loads(data["meta"].numpy().tobytes())
    if meta["key"] != key:
        raise CacheError("computed under other settings (key mismatch)")
    return CorpusScan(data["ids"], data["starts"], data["residual"], key, meta["texts"])


# --------------------------------------------------------------------------- segments


def document_chunks(
    paths: Sequence[Path], tokenizer: Any, n_tokens: int, context_length: int
) -> list[torch.Tensor]:
    """Unpacked chunks [<= context_length] of the corpus documents, in order, up to exactly
    ``n_tokens`` tokens at positions >= 1 (the last chunk is cut short)."""
    chunks: list[torch.Tensor] = []
    total = 0
    for chunk in corpus_chunks(paths, tokenizer, context_length, pack=False):
        chunks.append(chunk[: n_tokens - total + 1])
        total += len(chunks[-1]) - 1
        if total >= n_tokens:
            return chunks
    raise CogsaeError(
        f"the corpus has only {total} tokens to scan, {n_tokens} asked for", field="tokens"
    )


def sample_snippets(
    paths: Sequence[Path],
    tokenizer: Any,
    n_snippets: int,
    *,
    min_tokens: int = SNIPPET_TOKENS[0],
    max_tokens: int = SNIPPET_TOKENS[1],
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
    order = streams.rng(seed, streams.Stream.SNIPPET_SAMPLE).permutation(len(sentences))
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
