"""Typed results: the JSON objects of the public contract.

Every result carries ``ok`` and, when not ok, an ``error`` with a human reason and an
``error_kind`` (``input``, ``parse`` or ``backend``) so callers can count failures by cause.
A failed critique never has a reward: nothing downstream can mistake a failure for a score.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .dimensions import DIMENSION_KEYS, Task

ErrorKind = Literal["input", "parse", "backend"]
Winner = Literal["A", "B", "tie"]


def empty_scores() -> dict[str, float | None]:
    return {k: None for k in DIMENSION_KEYS}


class Usage(BaseModel):
    """Token accounting of one model call (when the backend reports it)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cached: bool = False


class CritiqueResult(BaseModel):
    """A pointwise critique of one image (t2i) or one edit."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    task: Task
    ok: bool
    error: str | None = None
    error_kind: ErrorKind | None = None
    scores: dict[str, float | None] = Field(default_factory=empty_scores)
    justifications: dict[str, str | None] = Field(default_factory=dict)
    reward: float | None = None
    summary: str | None = None
    analysis: str | None = None
    refinement_comments: str | None = None
    refined_request: str | None = None
    raw: str = ""
    usage: Usage | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class CompareResult(BaseModel):
    """A comparison of two images (or two edits of the same source)."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    task: Task
    mode: Literal["pairwise", "pointwise"] = "pairwise"
    ok: bool
    error: str | None = None
    error_kind: ErrorKind | None = None
    winner: Winner | None = None
    scores_a: dict[str, float | None] = Field(default_factory=empty_scores)
    scores_b: dict[str, float | None] = Field(default_factory=empty_scores)
    reward_a: float | None = None
    reward_b: float | None = None
    # What the model wrote on each dimension's "## Winner:" line; informative only, the
    # verdict comes from the scores (as in the release).
    dimension_winners: dict[str, Winner | None] = Field(default_factory=dict)
    justifications: dict[str, str | None] = Field(default_factory=dict)
    summary: str | None = None
    analysis: str | None = None
    raw: str = ""
    # Per-order results when both orders were judged (--swap); the second is already mapped
    # back to the caller's A/B.
    orders: list[CompareResult] = Field(default_factory=list)
    usage: Usage | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def failed_critique(
    task: Task, kind: ErrorKind, error: str, *, id: str | None = None, raw: str = ""
) -> CritiqueResult:
    return CritiqueResult(id=id, task=task, ok=False, error=error, error_kind=kind, raw=raw)


def failed_compare(
    task: Task,
    kind: ErrorKind,
    error: str,
    *,
    id: str | None = None,
    raw: str = "",
    mode: Literal["pairwise", "pointwise"] = "pairwise",
) -> CompareResult:
    return CompareResult(id=id, task=task, mode=mode, ok=False, error=error, error_kind=kind, raw=raw)
