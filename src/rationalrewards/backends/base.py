"""The backend interface: chat messages in, generated text (or an explicit failure) out."""

from __future__ import annotations

import asyncio
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..images import PreparedImage


@dataclass(frozen=True)
class SamplingParams:
    """Sampling options passed through to the model.

    Defaults follow the release (temperature 0.1). ``max_tokens`` 4096 leaves room for a full
    pairwise critique; the release used 2048 for RL and 20480 for evaluation.
    """

    temperature: float = 0.1
    max_tokens: int = 4096
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> SamplingParams:
        from dataclasses import replace

        if "stop" in changes and changes["stop"] is not None:
            changes["stop"] = tuple(changes["stop"])
        return replace(self, **changes)

    def key(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop) if self.stop else None
        return d


@dataclass
class Generation:
    """One model answer. ``text`` is None exactly when the call failed (``error`` says why)."""

    text: str | None
    error: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cached: bool = False
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.text is not None


class BackendError(RuntimeError):
    """A backend could not be created or reached at all (not a per-request failure)."""


class Backend(ABC):
    """Turns chat messages into text. Per-request failures are returned, never raised."""

    name: str = "backend"
    model_name: str = ""

    @abstractmethod
    async def agenerate(self, messages: list[dict[str, Any]], params: SamplingParams) -> Generation: ...

    async def agenerate_many(
        self, batch: Sequence[list[dict[str, Any]]], params: SamplingParams
    ) -> list[Generation]:
        return list(await asyncio.gather(*(self.agenerate(m, params) for m in batch)))

    async def aready(self, timeout: float = 60.0) -> bool:
        """Wait until the backend can answer; False if it did not become ready in time."""
        return True

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        pass

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_name}


def messages_fingerprint(messages: list[dict[str, Any]]) -> list[Any]:
    """A JSON-able, content-addressed view of messages (images by SHA-256)."""
    out: list[Any] = []
    for msg in messages:
        content = msg["content"]
        if isinstance(content, str):
            out.append([msg["role"], content])
            continue
        parts: list[Any] = []
        for part in content:
            if part["type"] == "text":
                parts.append(["t", part["text"]])
            else:
                img = part["image"]
                parts.append(["i", img.sha256 if isinstance(img, PreparedImage) else repr(img)])
        out.append([msg["role"], parts])
    return out


def request_key(model: str, messages: list[dict[str, Any]], params: SamplingParams) -> str:
    blob = json.dumps(
        {"model": model, "messages": messages_fingerprint(messages), "params": params.key()},
        sort_keys=True,
        ensure_ascii=False,
    )
    # surrogatepass: a prompt with a lone surrogate still gets a key (the same one as before for
    # every other text), instead of failing the cache lookup with UnicodeEncodeError.
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()
