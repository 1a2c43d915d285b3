"""SAE metrics on a tiny random Llama, and the train-sae / sae-metrics commands end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from cogsae.cli import main
from cogsae.corpus import files_hash, iter_documents, iter_token_chunks
from cogsae.model import LoadedModel, dtype_name, resolve_dtype
from cogsae.sae.base import SAE, SAEConfig
from cogsae.sae.io import load_sae
from cogsae.sae.metrics import sae_metrics
from tests.helpers import TINY_LAYER

WORDS = "the cat dog sat ran on under a mat tree house quickly slowly red blue".split()  # noqa: SIM905


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    rng = np.random.default_rng(0)
    docs = (" ".join(rng.choice(WORDS, int(rng.integers(5, 30)))) for _ in range(600))
    path.write_text("\n\n".join(docs), encoding="utf-8")
    return path


def exact_sae(d: int) -> SAE:
    """relu(x) - relu(-x) = x: 2d latents that reconstruct any input exactly."""
    sae = SAE(SAEConfig("standard", d, 2 * d, layer=TINY_LAYER))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
    return sae.eval()


def test_exact_sae_recovers_everything(tiny_model: LoadedModel, corpus: Path) -> None:
    metrics = sae_metrics(exact_sae(64), tiny_model, [corpus], 500, subset="all", progress=False)
    assert metrics.fraction_variance_explained == pytest.approx(1.0, abs=1e-6)
    assert metrics.mse == pytest.approx(0.0, abs=1e-9)
    assert metrics.ce_loss_spliced == pytest.approx(metrics.ce_loss_clean, abs=1e-5)
    assert metrics.ce_loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert metrics.l0 == pytest.approx(64.0, abs=0.5)
    assert metrics.dead_fraction == 0.0
    assert metrics.n_tokens >= 500 * (1 - metrics.massive_token_fraction)


def test_zero_sae_equals_zero_ablation(tiny_model: LoadedModel, corpus: Path) -> None:
    sae = SAE(SAEConfig("standard", 64, 16)).eval()  # all weights zero: reconstruction 0
    metrics = sae_metrics(sae, tiny_model, [corpus], 300, subset="all", progress=False)
    assert metrics.ce_loss_spliced == pytest.approx(metrics.ce_loss_zero_ablation, abs=1e-5)
    assert metrics.ce_loss_recovered == pytest.approx(0.0, abs=1e-4)
    assert metrics.dead_fraction == 1.0 and metrics.l0 == 0.0


def test_clean_loss_is_the_models_own_loss(tiny_model: LoadedModel, corpus: Path) -> None:
    """No edit: the hooked forward is the plain forward (positions 1..T-2 predicted)."""
    metrics = sae_metrics(exact_sae(64), tiny_model, [corpus], 127, subset="all", progress=False)
    chunk = next(iter_token_chunks(iter_documents([corpus]), tiny_model.tokenizer, 128))
    with torch.no_grad():
        logits = tiny_model.model(input_ids=chunk[None]).logits[0, 1:-1]
    assert metrics.ce_loss_clean == pytest.approx(
        float(F.cross_entropy(logits, chunk[2:])), abs=1e-5
    )


def test_train_sae_and_sae_metrics_commands(
    tiny_model: LoadedModel, corpus: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    model_dir = tmp_path / "tiny-llama"
    tiny_model.model.save_pretrained(model_dir)
    tiny_model.tokenizer.save_pretrained(model_dir)
    out = tmp_path / "sae"
    common = ["--model", str(model_dir), "--layer", str(TINY_LAYER), "--corpus", str(corpus)]
    train = ["train-sae", *common, "--out", str(out), "--d-sae", "32", "--k", "4"]
    train += ["--tokens", "2000", "--batch-size", "100", "--context-length", "32", "--quiet"]
    result = CliRunner().invoke(main, train)
    assert result.exit_code == 0, result.output
    sae = load_sae(out)
    assert (sae.cfg.architecture, sae.cfg.k, sae.cfg.d_sae) == ("topk", 4, 32)
    assert (sae.cfg.model_name, sae.cfg.layer, sae.cfg.context_size) == ("tiny-llama", 1, 32)
    training = json.loads((out / "training.json").read_text())
    assert training["config"]["n_tokens"] == 2000 and training["log"]
    assert training["config"]["dtype"] in ("bfloat16", "float32")  # resolved, not "auto"
    provenance = [{"name": corpus.name, "hash": files_hash([corpus])}]
    assert training["corpus"] == provenance  # by name and content, not by local path
    assert str(corpus.parent) not in (out / "training.json").read_text()
    metrics = ["sae-metrics", str(out), *common, "--tokens", "300", "--subset", "all", "--quiet"]
    result = CliRunner().invoke(main, metrics)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.json").read_text())
    assert record["layer"] == TINY_LAYER and 0 < record["fraction_variance_explained"] <= 1
    assert {"l0", "mse", "dead_fraction", "ce_loss_recovered"} <= set(record)
    assert record["corpus"] == provenance
    assert record["dtype"] == training["model_dtype"] == dtype_name(resolve_dtype("auto", "cpu"))
    too_many = ["--out", str(tmp_path / "x"), "--tokens", "10000000", "--quiet"]
    bad = CliRunner().invoke(main, ["train-sae", *common, *too_many])
    assert bad.exit_code == 2 and "training tokens" in bad.output
