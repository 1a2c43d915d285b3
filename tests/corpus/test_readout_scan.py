"""The run's corpus scoring shard by shard (`cogsae.corpus.readout_scan`) gives the local
scan's top examples bit for bit, in this process and on a local Ray cluster, even when a
worker dies mid-scan."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from cogsae.corpus import scan_snippets
from cogsae.corpus.readout_scan import readout_scan
from cogsae.model import LoadedModel
from cogsae.pipeline.corpus_stage import CorpusExample, found_examples, top_examples
from tests.helpers import dying_loader, linear, random_sae

N_SNIPPETS = 150  # three shards of 64 snippets


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 distinct sentences of 3-12 words."""
    words = "the cat dog sat ran on under a mat tree house quickly slowly red blue".split()  # noqa: SIM905
    rng = np.random.default_rng(1)
    sentences = [" ".join(rng.choice(words, rng.integers(3, 13))) + "." for _ in range(400)]
    path = tmp_path_factory.mktemp("snippets") / "corpus.txt"
    path.write_text("\n\n".join(" ".join(sentences[i : i + 4]) for i in range(0, 400, 4)))
    return path


def readouts() -> dict[str, dict]:
    """Two raw-space and two SAE-space ensembles (space -> label -> ensemble)."""
    return {
        "raw": {
            "raw:a": linear(
                [3, 9, 40, 1, 2, 5, 6, 8], [1.0, -0.5, 0.25, 0.3, 0.7, -0.9, 1.1, 0.2], 0.1
            ),
            "raw:b": linear([7], [2.0]),
        },
        "sae": {
            "sae:a": linear([4, 30, 77], [1.0, 0.5, -1.0], -0.2),
            "sae:b": linear([5], [1.0]),
        },
    }


def local_examples(loaded: LoadedModel, corpus: Path, n_top: int) -> dict[str, list[CorpusExample]]:
    """`top_examples` of the local snippet scan, per space."""
    scan = scan_snippets(loaded, [corpus], n_snippets=N_SNIPPETS, cache=False, progress=False)
    sae = random_sae(64, 128, seed=7)
    found = {}
    for space, group in readouts().items():
        found |= top_examples(
            scan, group, loaded.tokenizer, sae=sae if space == "sae" else None, n_top=n_top
        )
    return found


def assert_same(
    ours: dict[str, list[CorpusExample]], theirs: dict[str, list[CorpusExample]]
) -> None:
    """Same labels, texts, order, decisions, tokens and per-token decisions, exactly."""
    assert list(ours) == list(theirs)
    for label in ours:
        assert ours[label] == theirs[label], label


def test_sharded_scoring_equals_the_local_scan(
    tiny_model: LoadedModel, corpus: Path, isolated_cache: Path
) -> None:
    local = local_examples(tiny_model, corpus, N_SNIPPETS)  # every snippet, ranked
    sae = random_sae(64, 128, seed=7)
    found = readout_scan(
        tiny_model, sae, readouts(), [corpus], n_snippets=N_SNIPPETS, n_top=N_SNIPPETS,
        progress=False,
    )  # fmt: skip
    assert_same(found_examples(found, tiny_model.tokenizer), local)
    assert (
        found.key == scan_snippets(tiny_model, [corpus], n_snippets=N_SNIPPETS, progress=False).key
    )


@pytest.mark.usefixtures("ray_cluster")
def test_ray_scoring_equals_local_even_when_a_worker_dies(
    tiny_model: LoadedModel, tiny_assets: dict, corpus: Path, tmp_path: Path
) -> None:
    local = local_examples(tiny_model, corpus, 6)
    marker = tmp_path / "died"
    found = readout_scan(
        tiny_model,
        random_sae(64, 128, seed=7),
        readouts(),
        [corpus],
        n_snippets=N_SNIPPETS,
        n_top=6,
        engine="ray",
        loader=functools.partial(dying_loader, tiny_assets["model"], str(marker)),
        progress=False,
    )
    assert marker.exists()  # a worker did die mid-scan
    assert_same(found_examples(found, tiny_model.tokenizer), local)
