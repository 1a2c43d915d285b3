"""Text corpora: where documents come from (`sources`) and how they reach the model (`scan`)."""

from cogsae.corpus.scan import (
    DEFAULT_SNIPPETS,
    CorpusScan,
    corpus_chunks,
    document_chunks,
    residual_batches,
    residual_tokens,
    sample_snippets,
    scan_chunks,
    scan_snippets,
    token_batches,
)
from cogsae.corpus.sources import (
    Subset,
    batch_chunks,
    corpus_files,
    corpus_record,
    default_corpus,
    files_hash,
    iter_documents,
    iter_token_chunks,
    length_sorted_batches,
    select_documents,
)

__all__ = [
    "DEFAULT_SNIPPETS",
    "CorpusScan",
    "Subset",
    "batch_chunks",
    "corpus_chunks",
    "corpus_files",
    "corpus_record",
    "default_corpus",
    "document_chunks",
    "files_hash",
    "iter_documents",
    "iter_token_chunks",
    "length_sorted_batches",
    "residual_batches",
    "residual_tokens",
    "sample_snippets",
    "scan_chunks",
    "scan_snippets",
    "select_documents",
    "token_batches",
]
