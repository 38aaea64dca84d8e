"""Golden tests: realistic raw reward-model outputs and the typed results they must parse to.

Each case is a pair under ``tests/golden/``: ``NAME.txt`` holds the raw text exactly as a model
would emit it (CRLF and trailing spaces included) and ``NAME.json`` the expected fields:

* ``task`` (``t2i`` | ``edit``), ``mode`` (``pointwise`` | ``pairwise``), ``ok``;
* pointwise: ``scores`` (all four keys, ``null`` for N/A or not part of the task), ``reward``;
* pairwise: ``scores_a``, ``scores_b``, ``winner`` and optionally ``reward_a``, ``reward_b``,
  ``dimension_winners`` (the per-dimension ``Winner`` lines) and ``final_verdict``;
* ``error_contains``: substrings the error must contain when ``ok`` is false;
* optional ``refined_request``, ``summary_startswith``, ``justification_contains``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rationalrewards.critique.dimensions import DIMENSION_KEYS
from rationalrewards.critique.parser import parse_comparison, parse_critique, parse_final_verdict

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.stem for p in GOLDEN.glob("*.json"))

KNOWN_FIELDS = {
    "task",
    "mode",
    "ok",
    "scores",
    "reward",
    "scores_a",
    "scores_b",
    "winner",
    "reward_a",
    "reward_b",
    "dimension_winners",
    "final_verdict",
    "error_contains",
    "refined_request",
    "summary_startswith",
    "justification_contains",
}


def _load(name: str) -> tuple[str, dict[str, Any]]:
    raw = (GOLDEN / f"{name}.txt").read_bytes().decode("utf-8")  # bytes: keep CRLF as written
    expected = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    return raw, expected


def _assert_scores(actual: dict[str, float | None], expected: dict[str, float | None], label: str) -> None:
    assert set(expected) == set(DIMENSION_KEYS), f"{label}: golden file must list all four keys"
    for key in DIMENSION_KEYS:
        want, got = expected[key], actual.get(key)
        if want is None:
            assert got is None, f"{label}[{key}]: expected null (N/A or not scored), got {got!r}"
        else:
            assert got == pytest.approx(want, abs=1e-6), f"{label}[{key}]: expected {want}, got {got!r}"


def _assert_common(result: Any, expected: dict[str, Any]) -> None:
    assert result.ok is expected["ok"], f"ok={result.ok}, error={result.error!r}"
    if expected["ok"]:
        assert result.error is None
        assert result.error_kind is None
    else:
        assert result.error, "a failed parse must say why"
        assert result.error_kind == "parse"
        for fragment in expected["error_contains"]:
            assert fragment in result.error, f"{fragment!r} not in error {result.error!r}"
    if "summary_startswith" in expected:
        assert result.summary is not None
        assert result.summary.startswith(expected["summary_startswith"]), result.summary
    for key, fragment in expected.get("justification_contains", {}).items():
        text = result.justifications.get(key)
        assert text is not None and fragment in text, f"{fragment!r} not in {key} justification {text!r}"


def test_golden_corpus_is_complete() -> None:
    """Every .txt has its .json and vice versa, and the corpus covers both tasks and modes."""
    txt = {p.stem for p in GOLDEN.glob("*.txt")}
    assert txt == set(CASES)
    assert len(CASES) >= 48
    seen = {(e["task"], e["mode"]) for e in (_load(n)[1] for n in CASES)}
    assert seen == {("t2i", "pointwise"), ("edit", "pointwise"), ("t2i", "pairwise"), ("edit", "pairwise")}


@pytest.mark.parametrize("name", CASES)
def test_golden_case(name: str) -> None:
    """The raw model output parses to exactly the expected fields."""
    raw, expected = _load(name)
    unknown = set(expected) - KNOWN_FIELDS
    assert not unknown, f"unknown fields in {name}.json: {sorted(unknown)}"
    task, mode = expected["task"], expected["mode"]

    if mode == "pointwise":
        result = parse_critique(raw, task)
        assert result.raw == raw, "the raw text must be kept verbatim"
        _assert_common(result, expected)
        _assert_scores(result.scores, expected["scores"], "scores")
        if expected["ok"]:
            assert result.reward == pytest.approx(expected["reward"], abs=1e-6)
            assert 0.0 <= result.reward <= 1.0
        else:
            assert result.reward is None, "a failed critique never carries a reward"
        if "refined_request" in expected:
            assert result.refined_request == expected["refined_request"]
    else:
        assert mode == "pairwise"
        result = parse_comparison(raw, task)
        assert result.raw == raw, "the raw text must be kept verbatim"
        _assert_common(result, expected)
        _assert_scores(result.scores_a, expected["scores_a"], "scores_a")
        _assert_scores(result.scores_b, expected["scores_b"], "scores_b")
        assert result.winner == expected["winner"]
        if expected["ok"]:
            for side in ("reward_a", "reward_b"):
                if side in expected:
                    assert getattr(result, side) == pytest.approx(expected[side], abs=1e-6)
        else:
            assert result.reward_a is None and result.reward_b is None
        for key, want in expected.get("dimension_winners", {}).items():
            assert result.dimension_winners.get(key) == want, f"dimension_winners[{key}]"
        if "final_verdict" in expected:
            assert parse_final_verdict(raw) == expected["final_verdict"]
