"""Text corpora: where documents come from (`sources`) and how they reach the model."""

from cogsae.corpus.sources import (
    Subset,
    batch_chunks,
    corpus_files,
    corpus_record,
    default_corpus,
    files_hash,
    iter_documents,
    iter_token_chunks,
    select_documents,
)

__all__ = [
    "Subset",
    "batch_chunks",
    "corpus_files",
    "corpus_record",
    "default_corpus",
    "files_hash",
    "iter_documents",
    "iter_token_chunks",
    "select_documents",
]
