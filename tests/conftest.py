"""Shared fixtures: tiny offline checkpoints are built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="session")
def tiny_qwen3vl() -> Path:
    """A tiny random Qwen3-VL checkpoint folder (cached across sessions under RATIONALREWARDS_CACHE)."""
    from rationalrewards.testing import build_tiny_qwen3vl_cached

    return build_tiny_qwen3vl_cached(os.environ.get("RATIONALREWARDS_CACHE"))


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES
