"""dtype "auto": bfloat16 only where the hardware runs it natively, resolved once, recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cogsae.cli import main
from cogsae.errors import CogsaeError
from cogsae.model import LoadedModel, dtype_name, load_model, resolve_dtype
from cogsae.pipeline import RunConfig
from cogsae.sae.train import TrainConfig, _init_sae, _Trainer
from cogsae.stimuli import load_stimuli
from tests.helpers import TINY_LAYER, write


def mock_cpu_bf16(monkeypatch: pytest.MonkeyPatch, native: bool) -> torch.dtype:
    """Make torch report (or deny) native CPU bf16; returns what "auto" must give."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    return torch.bfloat16 if native else torch.float32


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_cpu_capability(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    expected = mock_cpu_bf16(monkeypatch, native)
    assert resolve_dtype("auto", "cpu") == expected
    assert TrainConfig().dtype == dtype_name(expected)
    assert RunConfig(stimuli="set.yaml").dtype == dtype_name(expected)
    config = TrainConfig(d_sae=32, k=4, batch_size=64, n_tokens=64)
    trainer = _Trainer(_init_sae(torch.randn(64, 16), 16, config, {}), config)
    assert trainer.dtype == expected  # the latent-selection product runs in it
    assert trainer.train_step(torch.randn(64, 16))["l0"] == 4
    for name in ("float32", "bfloat16", "float16"):  # explicit choices are kept
        assert dtype_name(resolve_dtype(name, "cpu")) == name


def test_auto_is_float32_when_the_check_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> bool:
        raise RuntimeError("no oneDNN")

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", broken)
    assert resolve_dtype("auto", "cpu") == torch.float32


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cuda_follows_the_gpu(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    mock_cpu_bf16(monkeypatch, not native)  # the CPU's answer must not matter
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation: native)
    assert resolve_dtype("auto", "cuda:0") == (torch.bfloat16 if native else torch.float32)


def test_unknown_dtype_is_a_user_error() -> None:
    with pytest.raises(CogsaeError, match="unknown dtype 'fp8'"):
        resolve_dtype("fp8", "cpu")


@pytest.mark.parametrize("native", [True, False])
def test_cli_echoes_and_records_the_resolved_dtype(
    monkeypatch: pytest.MonkeyPatch,
    native: bool,
    tiny_model: LoadedModel,
    tmp_path: Path,
    isolated_cache: Path,
) -> None:
    expected = dtype_name(mock_cpu_bf16(monkeypatch, native))
    model_dir = tmp_path / "tiny-llama"
    tiny_model.model.save_pretrained(model_dir)
    tiny_model.tokenizer.save_pretrained(model_dir)
    words = ["won", "passed", "closed", "finished"]
    path = write(
        tmp_path,
        "conditions:\n"
        + "  a: ["
        + ", ".join(f'"We {w} it."' for w in words)
        + "]\n"
        + "  b: ["
        + ", ".join(f'"We lost it {w}."' for w in words)
        + "]\n",
    )
    args = ["extract", str(path), "--model", str(model_dir), "--layer", str(TINY_LAYER)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.output.count(f"dtype: {expected} (auto on cpu)") == 1
    assert dtype_name(load_model(str(model_dir), dtype="auto").dtype) == expected
    cache = result.output.strip().rsplit("-> ", 1)[1]
    longest = max(len(tiny_model.tokenizer(t)["input_ids"]) for t in load_stimuli(path).texts())
    with np.load(cache) as data:  # no window: in the set: the longest item minus position 0
        assert data["values"].shape[1] == longest - 1
