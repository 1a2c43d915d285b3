"""Write the SAELens interop fixtures under tests/data/saelens/ with the real sae-lens package.

cogsae does not depend on sae-lens (it pulls in transformer-lens, wandb, datasets, ...), so
tests/sae/test_interop.py compares cogsae with encodings that sae-lens computed once, here.
Re-create them (they are deterministic) in a scratch environment that shares cogsae's torch:

    python -m venv /tmp/saelens-venv --system-site-packages
    /tmp/saelens-venv/bin/pip install sae-lens==6.54.12      # keeps the installed torch
    /tmp/saelens-venv/bin/python tests/data/make_saelens_fixtures.py

Each case is a folder ``<case>/`` (cfg.json + sae_weights.safetensors, exactly as sae-lens
wrote it) and ``<case>.expected.safetensors`` with fixed inputs ``x`` [N, D_IN] and
sae-lens's ``SAE.load_from_disk(<case>).encode(x)`` [N, D_SAE] and ``.decode(...)`` [N, D_IN].

Cases (d_in 16, d_sae 32, random weights with non-unit decoder rows):
- standard: ReLU SAE, b_dec subtracted from the input (sae-lens default).
- topk: TopK k=4 inference SAE, no decoder-norm rescaling, apply_b_dec_to_input false.
- topk_rescale_checkpoint: a TopK training SAE (rescale_acts_by_decoder_norm true, sae-lens's
  default for training) saved with ``save_model``, as the trainer writes checkpoints:
  unfolded weights, so the decoder norms change which latents are active.
- topk_rescale_inference: the same SAE saved with ``save_inference_model``, as the trainer
  writes its final folder (decoder norms folded in by sae-lens).
- jumprelu: JumpReLU SAE with thresholds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import sae_lens
import torch
from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent / "saelens"
D_IN, D_SAE, K, N = 16, 32, 4, 24


def randomise(sae: torch.nn.Module, seed: int) -> None:
    """Random weights, decoder rows with norms in [0.5, 2] so that rescaling matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
            if name == "threshold":
                param.abs_()
        sae.W_dec.mul_(torch.rand(D_SAE, 1, generator=gen) * 1.5 + 0.5)


def main() -> None:
    shutil.rmtree(HERE, ignore_errors=True)
    HERE.mkdir(parents=True)
    metadata = {"model_name": "tiny", "hook_name": "blocks.2.hook_resid_post"}
    x = torch.randn(N, D_IN, generator=torch.Generator().manual_seed(0)) * 2 + 0.5
    rescaled = TopKTrainingSAEConfig(D_IN, D_SAE, k=K)  # rescale_acts_by_decoder_norm=True
    saes = {  # case: (SAE, how sae-lens writes it, weight seed)
        "standard": (StandardSAE(StandardSAEConfig(D_IN, D_SAE)), "save_model", 0),
        "topk": (
            TopKSAE(TopKSAEConfig(D_IN, D_SAE, k=K, apply_b_dec_to_input=False)),
            "save_model",
            1,
        ),
        "topk_rescale_checkpoint": (TopKTrainingSAE(rescaled), "save_model", 2),
        "topk_rescale_inference": (TopKTrainingSAE(rescaled), "save_inference_model", 2),
        "jumprelu": (JumpReLUSAE(JumpReLUSAEConfig(D_IN, D_SAE)), "save_model", 3),
    }
    for case, (sae, save, seed) in saes.items():
        randomise(sae, seed)
        sae.cfg.metadata = sae_lens.saes.sae.SAEMetadata(**metadata)
        getattr(sae, save)(HERE / case)
        loaded = sae_lens.SAE.load_from_disk(HERE / case)
        with torch.no_grad():
            f = loaded.encode(x)
            expected = {"x": x, "encode": f, "decode": loaded.decode(f)}
        save_file(
            {k: v.contiguous() for k, v in expected.items()}, HERE / f"{case}.expected.safetensors"
        )
        cfg = json.loads((HERE / case / "cfg.json").read_text())
        print(
            case,
            type(loaded).__name__,
            {k: cfg.get(k) for k in ("architecture", "rescale_acts_by_decoder_norm")},
        )
    print("sae-lens", sae_lens.__version__, "torch", torch.__version__)


if __name__ == "__main__":
    main()
