"""Fixtures of the CLI tests: a small corpus and the tiny model's common flags."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """A short repetitive corpus file (enough to train a tiny SAE on)."""
    path = tmp_path / "corpus.txt"
    path.write_text("The cat sat on the mat. The team won the cup. " * 200, encoding="utf-8")
    return path


@pytest.fixture()
def tiny_flags(tiny_assets: dict, corpus: Path, isolated_cache: Path) -> list[str]:
    """--model/--sae/--dtype/--corpus/--tokens for the tiny model and SAE, cache isolated."""
    return [
        "--model", tiny_assets["model"], "--sae", tiny_assets["sae"], "--dtype", "float32",
        "--corpus", str(corpus), "--tokens", "60",
    ]  # fmt: skip
