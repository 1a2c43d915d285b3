"""Write the sparsify interop fixtures under tests/data/sparsify/ with the real eai-sparsify.

cogsae does not depend on sparsify (it pulls in datasets, accelerate, ...), so
tests/sae/test_formats.py compares cogsae with encodings that sparsify computed once, here.
Re-create them (they are deterministic) in a scratch environment that shares cogsae's torch:

    python -m venv /tmp/venv-interop --system-site-packages
    /tmp/venv-interop/bin/pip install --no-deps eai-sparsify==1.3.3 einops natsort \\
        simple-parsing schedulefree docstring-parser datasets
    /tmp/venv-interop/bin/python tests/data/make_sparsify_fixtures.py

Folders are written with ``SparseCoder.save_to_disk``, as sparsify's trainer writes a run
(``<save_dir>/<hookpoint>/`` with cfg.json + sae.safetensors). All have d_in 16 and 32
latents (random weights, decoder rows of norm in [0.5, 2]).

- release/: a multi-layer run on a Llama: "layers.1" (k 4, float32), "layers.2" (k 6,
  multi_topk, saved in bfloat16 as public releases are) and "layers.2.mlp" (an SAE on the
  MLP output of block 2, not on the residual stream);
  ``release/<hookpoint>.expected.safetensors`` holds fixed inputs ``x`` [N, 16], sparsify's
  encoding scattered to dense ``encode`` [N, 32] and ``decode`` [N, 16] of its top-k.
- refused/: folders cogsae must refuse: a transcoder ("transcoder/layers.2.mlp"), a skip
  connection ("skip/layers.1") and a GroupMax SAE ("groupmax/layers.1").
"""

from __future__ import annotations

import shutil
from pathlib import Path

import sparsify
import torch
from safetensors.torch import save_file
from sparsify import SparseCoder, SparseCoderConfig

HERE = Path(__file__).resolve().parent / "sparsify"
D_IN, N_LATENTS, N = 16, 32, 24


def random_coder(seed: int, dtype: torch.dtype = torch.float32, **cfg: object) -> SparseCoder:
    """A sparsify SAE on 16 -> 32 with random weights (seeded)."""
    coder = SparseCoder(D_IN, SparseCoderConfig(num_latents=N_LATENTS, **cfg))  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in coder.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
        coder.W_dec.mul_(torch.rand(N_LATENTS, 1, generator=gen) * 1.5 + 0.5)
    return coder.to(dtype)


def main() -> None:
    shutil.rmtree(HERE, ignore_errors=True)
    x = torch.randn(N, D_IN, generator=torch.Generator().manual_seed(0)) * 2 + 0.5
    release = {
        "layers.1": random_coder(0, k=4),
        "layers.2": random_coder(1, torch.bfloat16, k=6, multi_topk=True),
        "layers.2.mlp": random_coder(2, k=4),
    }
    for hookpoint, coder in release.items():
        coder.save_to_disk(HERE / "release" / hookpoint)
        loaded = SparseCoder.load_from_disk(HERE / "release" / hookpoint)
        with torch.no_grad():
            top_acts, top_indices, _ = loaded.encode(x.to(loaded.dtype))
            dense = torch.zeros(N, N_LATENTS, dtype=top_acts.dtype)
            expected = {
                "x": x,
                "encode": dense.scatter_(-1, top_indices, top_acts).float(),
                "decode": loaded.decode(top_acts, top_indices).float(),
            }
        save_file(expected, HERE / "release" / f"{hookpoint}.expected.safetensors")
    random_coder(3, k=4, transcode=True).save_to_disk(HERE / "refused/transcoder/layers.2.mlp")
    random_coder(4, k=4, skip_connection=True).save_to_disk(HERE / "refused/skip/layers.1")
    random_coder(5, k=4, activation="groupmax").save_to_disk(HERE / "refused/groupmax/layers.1")
    print("sparsify", sparsify.__version__, "torch", torch.__version__)


if __name__ == "__main__":
    main()
