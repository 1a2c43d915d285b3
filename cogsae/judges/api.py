"""A judge behind any OpenAI-compatible chat endpoint, and the safe HTTP helpers it uses.

Configured by the environment (COGSAE_JUDGE_URL, COGSAE_JUDGE_MODEL, optional
COGSAE_JUDGE_KEY); errors never print credentials, query strings or headers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import numpy as np

from cogsae.errors import CogsaeError
from cogsae.judges.base import NO_SCORE, RUBRIC

log = logging.getLogger(__name__)


Transport = Callable[[str, dict[str, str], dict[str, Any]], str]
"""(url, headers, JSON payload) -> response body; raises CogsaeError when the call fails."""


def redact_url(url: str) -> str:
    """``url`` without credentials, query string or fragment: safe to print in errors."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host += f":{parts.port}"
    except ValueError:
        return "<invalid URL>"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _scrub(text: str, url: str) -> str:
    """``text`` with the query, fragment and credentials of ``url`` masked."""
    try:
        parts = urllib.parse.urlsplit(url)
        secrets = [parts.query, parts.fragment, parts.username, parts.password]
    except ValueError:
        return "invalid URL"
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def chat_completions_url(base: str) -> str:
    """The ``/chat/completions`` endpoint of an API base URL, query string kept at the end."""
    parts = urllib.parse.urlsplit(base)
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urllib.parse.urlunsplit(parts._replace(path=path))


def post_json(url: str, headers: dict[str, str], payload: dict[str, Any]) -> str:
    """POST ``payload`` as JSON to ``url`` and return the response body (60 s timeout).

    Errors name the endpoint without its query string or credentials, never the headers.
    """
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={**headers, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, TimeoutError, ValueError) as err:
        if isinstance(err, urllib.error.HTTPError):
            reason = f"HTTP {err.code} {err.reason}"
        else:
            reason = _scrub(str(getattr(err, "reason", err)), url)
        raise CogsaeError(
            f"judge API call to {redact_url(url)} failed: {reason}", field="judge"
        ) from None


class APIJudge:
    """A chat model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    One request per text (temperature 0); the first digit 0-3 of the reply (after any
    ``</think>``) is the score; a reply without one, or a malformed response, scores
    `NO_SCORE`.

    Attributes:
        url: the chat-completions URL ("/chat/completions" appended to a base URL).
        model: the model name sent with each request.
        key: bearer token, or None for servers without authentication.
        transport: how requests are sent (`post_json`; tests pass a fake).
    """

    name = "api"
    SYSTEM = (
        "You rate how much a text is about a concept, on this scale: "
        + "; ".join(f"{k} = {v}" for k, v in RUBRIC.items())
        + ". Reply with the digit only."
    )

    def __init__(
        self, url: str, model: str, key: str | None = None, transport: Transport = post_json
    ) -> None:
        self.url = chat_completions_url(url)
        self.model = model
        self.key = key
        self.transport = transport

    @classmethod
    def from_env(cls) -> APIJudge | None:
        """The judge configured by COGSAE_JUDGE_URL / _MODEL / _KEY, or None if unset."""
        url, model = os.environ.get("COGSAE_JUDGE_URL"), os.environ.get("COGSAE_JUDGE_MODEL")
        if not (url and model):
            return None
        return cls(url, model, os.environ.get("COGSAE_JUDGE_KEY") or None)

    def request(self, concept: str, text: str) -> dict[str, Any]:
        """The JSON payload asking for one text's score."""
        return {
            "model": self.model,
            "temperature": 0,
            "max_tokens": 8,
            "messages": [
                {"role": "system", "content": self.SYSTEM},
                {"role": "user", "content": f'Concept: {concept}\nText: "{text}"\nScore:'},
            ],
        }

    def score(self, concept: str, texts: list[str]) -> np.ndarray:
        """[len(texts)] int scores 0..3, `NO_SCORE` where the reply has none."""
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        scores = np.array(
            [
                parse_reply(self.transport(self.url, headers, self.request(concept, t)))
                for t in texts
            ]
        )
        if (scores == NO_SCORE).any():
            log.warning("judge API: %d of %d replies had no score", (scores < 0).sum(), len(texts))
        return scores


def parse_reply(body: str) -> int:
    """The score in an OpenAI-style chat-completion response body, or `NO_SCORE`."""
    try:
        content = json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return NO_SCORE
    if not isinstance(content, str):
        return NO_SCORE
    match = re.search(r"(?<![\d.])[0-3](?![\d.])", content.rsplit("</think>", 1)[-1])
    return int(match.group()) if match else NO_SCORE
