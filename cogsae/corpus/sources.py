"""Text corpora for SAE training, SAE metrics and corpus scans.

Reading rules (`iter_documents`):
- ``.jsonl``: one JSON object per line with a string field ``"text"``; blank lines are
  skipped; a malformed line is a `CogsaeError` naming the file and line.
- any other file is plain UTF-8 text. ``split="paragraph"`` (default): documents are
  separated by one or more blank lines, the lines of a paragraph are kept joined by "\\n".
  ``split="line"``: every non-blank line is one document.

`default_corpus` builds, once, ``<cache>/corpus/default.jsonl`` from three Debian
packages (WordNet glosses, the six Jane Austen novels, fortunes), with the documents
shuffled by a fixed seed so that any prefix mixes all three sources. The default corpus
of `corpus_files` is that file followed by everyday text (news and the Harvard
sentences, `cogsae.corpus.everyday`), kept in its own file so that ``default.jsonl``
(the default SAE's training text) keeps its documents, order and hash.

`iter_token_chunks` turns documents into token chunks for the model. Every consumer
drops position 0 of each chunk: the first position of a Llama-family model carries an
attention-sink activation of huge norm (docs/methods.md, "Windows and masks"), so SAEs
are neither trained nor evaluated there.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from cogsae._io import atomic_path, cache_dir
from cogsae.corpus.everyday import everyday_corpus
from cogsae.corpus.packages import files_hash, missing_package, read_lazy_load
from cogsae.errors import CogsaeError

WORDNET_DIR = Path("/usr/share/wordnet")
AUSTEN_DIR = Path("/usr/lib/R/site-library/janeaustenr/data")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
_DEFAULT_SEED = 0
_BLANK = re.compile(r"\n\s*\n")

T = TypeVar("T")
Split = Literal["paragraph", "line"]
Subset = Literal["train", "heldout", "all"]


def iter_documents(paths: Iterable[str | Path], split: Split = "paragraph") -> Iterator[str]:
    """Stream the documents of text / ``.jsonl`` files, in file order (see module doc)."""
    for path in map(Path, paths):
        if not path.is_file():
            raise CogsaeError("corpus file not found", path=path, field="corpus")
        if path.suffix == ".jsonl":
            yield from _iter_jsonl(path)
        else:
            yield from _iter_text(path, split)


def _iter_jsonl(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise CogsaeError(f"invalid JSON: {err.msg}", path=path, line=number) from err
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise CogsaeError(
                    'each line must be an object with a string "text"',
                    path=path,
                    line=number,
                    field="text",
                )
            if text.strip():
                yield text


def _iter_text(path: Path, split: Split) -> Iterator[str]:
    try:
        with path.open(encoding="utf-8") as fh:
            if split == "line":
                yield from (line.strip() for line in fh if line.strip())
                return
            paragraph: list[str] = []
            for line in fh:
                if line.strip():
                    paragraph.append(line.rstrip("\n"))
                elif paragraph:
                    yield "\n".join(paragraph)
                    paragraph = []
            if paragraph:
                yield "\n".join(paragraph)
    except UnicodeDecodeError as err:
        raise CogsaeError(f"not UTF-8 text ({err.reason})", path=path) from err


def select_documents(
    documents: Iterable[str], subset: Subset = "all", heldout_every: int = 20
) -> Iterator[str]:
    """Split a document stream deterministically: every ``heldout_every``-th document
    (indices ``heldout_every-1, 2*heldout_every-1, ...``) is "heldout", the rest "train".

    SAE training reads "train" and SAE metrics read "heldout", so metrics are measured
    on text the SAE never saw.
    """
    for index, doc in enumerate(documents):
        is_heldout = index % heldout_every == heldout_every - 1
        if subset == "all" or (subset == "heldout") == is_heldout:
            yield doc


def iter_token_chunks(
    documents: Iterable[str],
    tokenizer: PreTrainedTokenizerBase,
    context_length: int = 128,
    pack: bool = True,
    batch_docs: int = 256,
) -> Iterator[torch.Tensor]:
    """Token id chunks [<= context_length] (int64) from a document stream.

    ``pack=True``: documents are tokenized without special tokens, joined by the EOS
    token and cut into chunks of exactly ``context_length`` (the incomplete tail is
    dropped): no padding, so every batch is dense (training and metrics use this).
    ``pack=False``: each document is chunked on its own; its last chunk may be shorter
    (for scans that must not mix documents). Chunks shorter than 2 tokens are skipped,
    since position 0 of every chunk is dropped downstream.
    """
    if context_length < 2:
        raise CogsaeError("context length must be at least 2", field="context_length")
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    buffer: list[int] = []
    for batch in _groups(documents, batch_docs):
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            if pack:
                buffer.extend(ids)
                buffer.extend(sep)
                while len(buffer) >= context_length:
                    yield torch.tensor(buffer[:context_length], dtype=torch.long)
                    del buffer[:context_length]
            else:
                for start in range(0, len(ids), context_length):
                    piece = ids[start : start + context_length]
                    if len(piece) >= 2:
                        yield torch.tensor(piece, dtype=torch.long)


def _groups(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    iterator = iter(items)
    while group := list(itertools.islice(iterator, size)):
        yield group


def batch_chunks(
    chunks: Iterable[torch.Tensor], batch_size: int, pad_id: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Group chunks into right-padded ``(input_ids, attention_mask)`` pairs [batch, seq]."""
    for group in _groups(chunks, batch_size):
        width = max(len(c) for c in group)
        ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, c in enumerate(group):
            ids[row, : len(c)] = c
            mask[row, : len(c)] = 1
        yield ids, mask


def length_sorted_batches(
    segments: Sequence[Sequence[int] | torch.Tensor], batch_size: int, pad_id: int = 0
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Segments in batches of similar length: ``(members, input_ids, attention_mask)``, with
    ``members`` [batch] the indices of the batch's segments (stable sort by length) and the
    right-padded pair [batch, seq] as in `batch_chunks`."""
    groups = length_sorted_groups([len(s) for s in segments], batch_size)
    chunks = (torch.as_tensor(segments[i]) for members in groups for i in members)
    batches = batch_chunks(chunks, batch_size, pad_id)
    for members, (input_ids, mask) in zip(groups, batches, strict=True):
        yield members, input_ids, mask


def length_sorted_groups(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """[batch] segment indices of each batch of similar length (stable sort by length), the
    batches `length_sorted_batches` runs."""
    order = np.argsort(lengths, kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def default_corpus() -> Path:
    """Path of the default corpus (.jsonl), built once from Debian packages (~3.4M tokens).

    Sources: WordNet glosses (definition and example sentences, package wordnet-base),
    the six Jane Austen novels as paragraphs (r-cran-janeaustenr, read with ``rdata``),
    and fortunes (package fortunes, entries separated by "%" lines). Documents are
    shuffled with a fixed seed. Written atomically, so an interrupted build leaves none.
    """
    target = cache_dir() / "corpus" / "default.jsonl"
    if target.is_file():
        return target
    docs = [*_wordnet_glosses(), *_austen_paragraphs(), *_fortunes()]
    random.Random(_DEFAULT_SEED).shuffle(docs)
    with atomic_path(target) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for doc in docs:
            fh.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
    return target


def _wordnet_glosses() -> list[str]:
    """Glosses (text after "|") of all WordNet synsets: definition; "examples"."""
    files = [WORDNET_DIR / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    if not all(f.is_file() for f in files):
        raise missing_package("wordnet-base", WORDNET_DIR)
    glosses = []
    for path in files:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  ") or "|" not in line:  # licence header
                    continue
                glosses.append(line.split("|", 1)[1].strip())
    return glosses


def _austen_paragraphs() -> list[str]:
    """Paragraphs of the six novels: consecutive non-blank lines joined by spaces."""
    paragraphs = []
    for _, novel in read_lazy_load(AUSTEN_DIR, "r-cran-janeaustenr"):
        lines = [str(x) for x in novel]
        paragraphs.extend(" ".join(p.split()) for p in _BLANK.split("\n".join(lines)) if p.strip())
    return paragraphs


def _fortunes() -> list[str]:
    """Entries of every fortune file (those with a ``.dat`` index), separated by "%"."""
    files = sorted(p.with_suffix("") for p in FORTUNES_DIR.glob("*.dat"))
    if not files:
        raise missing_package("fortunes", FORTUNES_DIR)
    entries = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        entries.extend(e.strip("\n") for e in re.split(r"^%\s*$", text, flags=re.M))
    return [e for e in entries if e.strip()]


def corpus_files(corpus: Sequence[str | Path] = ()) -> list[Path]:
    """The corpus files to read: ``corpus``, or the default corpus when empty: `default_corpus`
    followed by the everyday text (`cogsae.corpus.everyday.everyday_corpus`)."""
    paths = [Path(p) for p in corpus] or [default_corpus(), everyday_corpus()]
    for path in paths:
        if not path.is_file():
            raise CogsaeError("corpus file not found", path=path, field="corpus")
    return paths


def corpus_record(paths: Sequence[str | Path]) -> list[dict[str, str]]:
    """Provenance of corpus files for results: file name and content hash (`files_hash`),
    never the local path, so records compare across machines."""
    return [{"name": Path(p).name, "hash": files_hash([Path(p)])} for p in paths]
