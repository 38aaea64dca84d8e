"""The trajectory of one refinement run: what was asked, generated, scored and kept, round by round.

``DIR/trajectory.json`` is the contract's object, with more fields around it::

    {"prompt", "rounds": [{"request", "candidates": [{"image", "reward", "scores"}], "accepted"}],
     "best": {"image", "reward", "request", "round"}}

Image paths are relative to ``DIR``. The file is rewritten atomically after every step, so it is
also the resume state: a run restarted on the same ``DIR`` continues from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..io import atomic_write_json

TRAJECTORY_FILE = "trajectory.json"
TRAJECTORY_VERSION = 1

RequestSource = Literal["original", "critique", "refiner", "anchored", "repeat"]


class Candidate(BaseModel):
    """One generated image and its critique against the ORIGINAL request."""

    model_config = ConfigDict(extra="allow")

    index: int
    seed: int
    image: str | None = None
    ok: bool = False
    reward: float | None = None
    scores: dict[str, float | None] = Field(default_factory=dict)
    error: str | None = None
    error_kind: str | None = None
    justifications: dict[str, str | None] = Field(default_factory=dict)
    summary: str | None = None
    refinement_comments: str | None = None
    refined_request: str | None = None
    # Raw critic text, kept only for failed critiques (to see why parsing failed).
    raw: str | None = None

    def critique_view(self) -> dict[str, Any]:
        """The fields a refiner needs."""
        return {"reward": self.reward, "scores": self.scores, "justifications": self.justifications,
                "summary": self.summary, "refinement_comments": self.refinement_comments,
                "refined_request": self.refined_request}


class Round(BaseModel):
    """One generate -> critique -> decide step."""

    model_config = ConfigDict(extra="allow")

    round: int
    request: str
    request_source: RequestSource = "original"
    # Which critique the request was derived from ({"round": r, "candidate": i}); None for round 0.
    parent: dict[str, int] | None = None
    # Drift guard record: {"overlap": float, "anchored": bool, "proposal": str}.
    drift: dict[str, Any] | None = None
    refiner_error: str | None = None
    seeds: list[int] = Field(default_factory=list)
    candidates: list[Candidate] = Field(default_factory=list)
    round_best: int | None = None
    round_best_reward: float | None = None
    accepted: bool = False
    decision: str = ""
    comparison: dict[str, Any] | None = None
    generator_calls: int = 0
    critic_calls: int = 0
    refiner_calls: int = 0


class Best(BaseModel):
    """The best image so far (the last accepted round's best candidate)."""

    model_config = ConfigDict(extra="allow")

    image: str | None
    reward: float | None
    request: str
    round: int
    candidate: int
    seed: int
    scores: dict[str, float | None] = Field(default_factory=dict)


class Pending(BaseModel):
    """A round whose images are generated and saved but not yet (successfully) critiqued.

    A restarted run critiques these images instead of generating them again.
    """

    model_config = ConfigDict(extra="allow")

    round: int
    request: str
    request_source: RequestSource
    parent: dict[str, int] | None = None
    drift: dict[str, Any] | None = None
    refiner_error: str | None = None
    refiner_calls: int = 0
    seeds: list[int]
    images: list[str]


class Usage(BaseModel):
    generator_calls: int = 0
    critic_calls: int = 0
    refiner_calls: int = 0


class Baseline(BaseModel):
    """Best-of-K with the original request, K = the loop's generations (equal compute)."""

    model_config = ConfigDict(extra="allow")

    generations: int
    candidates: list[Candidate] = Field(default_factory=list)
    best: Best | None = None
    finished: bool = False
    generator_calls: int = 0
    critic_calls: int = 0
    # How many of the candidates are the loop's own round-0 images (same seeds, same request).
    reused_from_round0: int = 0


class Trajectory(BaseModel):
    """Everything about one item's run; see the module docstring."""

    model_config = ConfigDict(extra="allow")

    version: int = TRAJECTORY_VERSION
    id: str | None = None
    task: Literal["t2i", "edit"] = "t2i"
    prompt: str
    source: list[str] = Field(default_factory=list)
    mode: Literal["refine", "best-of-n"] = "refine"
    fingerprint: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    generator: dict[str, Any] = Field(default_factory=dict)
    critic: dict[str, Any] = Field(default_factory=dict)
    refiner: dict[str, Any] | None = None
    rounds: list[Round] = Field(default_factory=list)
    best: Best | None = None
    pending: Pending | None = None
    finished: bool = False
    stop_reason: str | None = None
    error: str | None = None
    error_kind: str | None = None
    usage: Usage = Field(default_factory=Usage)
    baseline: Baseline | None = None

    @property
    def ok(self) -> bool:
        """Finished with a scored best image."""
        return self.finished and self.best is not None and self.error is None

    def round0_best(self) -> Candidate | None:
        if not self.rounds or self.rounds[0].round_best is None:
            return None
        return self.rounds[0].candidates[self.rounds[0].round_best]

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["ok"] = self.ok
        return data

    def save(self, out_dir: str | Path) -> Path:
        path = Path(out_dir) / TRAJECTORY_FILE
        atomic_write_json(path, self.to_json())
        return path


def load_trajectory(out_dir: str | Path) -> Trajectory | None:
    """The trajectory saved in ``out_dir``, or None if there is none (or it is unreadable)."""
    path = Path(out_dir) / TRAJECTORY_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    data.pop("ok", None)
    try:
        return Trajectory.model_validate(data)
    except ValueError:
        return None


def item_summary(traj: Trajectory, out: str | None = None) -> dict[str, Any]:
    """One line of a batch's ``results.jsonl``: the numbers the summary aggregates."""
    r0 = traj.round0_best()
    best = traj.best
    base = traj.baseline.best if traj.baseline is not None and traj.baseline.finished else None
    improved = None
    if r0 is not None and best is not None and r0.reward is not None and best.reward is not None:
        improved = best.reward > r0.reward
    return {
        "id": traj.id,
        "ok": traj.ok,
        "error": traj.error,
        "error_kind": traj.error_kind,
        "task": traj.task,
        "prompt": traj.prompt,
        "out": out,
        "stop_reason": traj.stop_reason,
        "rounds_run": len(traj.rounds),
        "generator_calls": traj.usage.generator_calls,
        "critic_calls": traj.usage.critic_calls,
        "refiner_calls": traj.usage.refiner_calls,
        "round0": None if r0 is None else {"reward": r0.reward, "scores": r0.scores, "image": r0.image},
        "final": None if best is None else {"reward": best.reward, "scores": best.scores, "request": best.request,
                                            "round": best.round, "image": best.image},
        "improved": improved,
        "baseline": None if base is None else {"reward": base.reward, "scores": base.scores, "image": base.image,
                                               "generations": traj.baseline.generations if traj.baseline else 0},
    }
