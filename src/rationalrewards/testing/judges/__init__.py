"""Scripted judges: one home for every responder that plays a judge in tests, benchmarks and docs.

A scripted judge is a :data:`~rationalrewards.testing.scripted_server.Responder` for
:class:`~rationalrewards.testing.scripted_server.ScriptedServer` whose answers are a deterministic
function of the request. Each behaviour is registered by name, so a test, a benchmark running the
server in its own process (``python -m rationalrewards.testing.judges --judge NAME``) or a
doc example asks for the same judge the same way::

    from rationalrewards.testing.judges import judge
    from rationalrewards.testing.scripted_server import ScriptedServer

    with ScriptedServer(judge("pixel")) as server:
        rm = RewardModel.from_openai(server.base_url, model="scripted")

=================== ===============================================================================
``released``        well-formed critiques with fixed scores (the server's default judge)
``pixel``           scores follow the judged image's pixels: brighter and redder score higher (RL)
``toy-critic``      rewards bright images and asks for one more ``brighter`` (the refine toy loop)
``parrot-teacher``  plays the PARROT teacher; the request's first word picks its behaviour
=================== ===============================================================================

The production packages never import this kit (``tests/test_architecture.py`` checks it): a stage
takes a judge as a URL or a backend, and only tests and examples start a scripted one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..._lazy import lazy_exports

if TYPE_CHECKING:
    from ..scripted_server import Responder
    from .critic import instruction_of, toy_critic, toy_scores
    from .pixel import brightness, pixel_judge, pixel_scores, redness
    from .teacher import BEHAVIOURS, scripted_teacher, tag_of

JudgeFactory = Callable[..., "Responder"]

# name -> "module:factory" (relative to this package), imported on first use so that listing the
# judges or starting the stand-alone server with one of them loads nothing the others need.
_REGISTRY: dict[str, str | JudgeFactory] = {
    "released": "..scripted_server:judge_responder",
    "pixel": ".pixel:pixel_judge",
    "toy-critic": ".critic:toy_critic",
    "parrot-teacher": ".teacher:scripted_teacher",
}

_DESCRIPTIONS: dict[str, str] = {
    "released": "well-formed critiques with fixed scores (the server's default judge)",
    "pixel": "scores follow the judged image's brightness and redness",
    "toy-critic": "rewards bright images; the refined request asks for one more 'brighter'",
    "parrot-teacher": "plays the PARROT teacher; the request's first word picks its behaviour",
}


def register_judge(name: str, factory: JudgeFactory, description: str = "", *, replace: bool = False) -> None:
    """Make ``judge(name, **options)`` call ``factory(**options)``.

    Registering a taken name raises unless ``replace=True``, so two test modules cannot silently
    swap each other's judge.
    """
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"judge name must be letters, digits, '-' or '_', not {name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"a judge named {name!r} is already registered (pass replace=True to override it)")
    _REGISTRY[name] = factory
    _DESCRIPTIONS[name] = description


def judge_names() -> dict[str, str]:
    """Every registered judge name with its one-line description."""
    return {name: _DESCRIPTIONS.get(name, "") for name in sorted(_REGISTRY)}


def judge_factory(name: str) -> JudgeFactory:
    """The factory registered under ``name``; ``KeyError`` naming the known judges otherwise."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise KeyError(f"no scripted judge named {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module, __name__), attr)
        _REGISTRY[name] = entry
    return entry


def judge(name: str, **options: Any) -> Responder:
    """A fresh responder of the judge registered as ``name``, built with ``options``."""
    return judge_factory(name)(**options)


_LAZY = {
    "instruction_of": ".critic",
    "toy_critic": ".critic",
    "toy_scores": ".critic",
    "brightness": ".pixel",
    "pixel_judge": ".pixel",
    "pixel_scores": ".pixel",
    "redness": ".pixel",
    "BEHAVIOURS": ".teacher",
    "scripted_teacher": ".teacher",
    "tag_of": ".teacher",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "BEHAVIOURS",
    "JudgeFactory",
    "brightness",
    "instruction_of",
    "judge",
    "judge_factory",
    "judge_names",
    "pixel_judge",
    "pixel_scores",
    "redness",
    "register_judge",
    "scripted_teacher",
    "tag_of",
    "toy_critic",
    "toy_scores",
]
