"""An offline reference world and ``rationalrewards demo``: the whole system, learning, on a laptop.

* :mod:`.world` - scene specs, a renderer, prompts written from specs, edit tasks, true defects;
* :mod:`.generator` - a procedural generator whose error rates depend on how explicit the prompt is;
* :mod:`.teacher` - a scripted teacher backend (``demo-teacher``) with configurable noise;
* :mod:`.vision` - pretraining and conditioning of the student's vision tower;
* :mod:`.base_data`, :mod:`.base` - the pretrained base student (generic vision-language tasks of
  the world), shipped with the package under ``demo/base``;
* :mod:`.sft` - the lean SFT loop (frozen-tower features computed once);
* :mod:`.pipeline` - the end-to-end run: pairs -> PARROT -> student training -> eval -> refine;
* :mod:`.report` - ``summary.json`` and ``report.html``.

See ``docs/demo.md``. Importing this package is cheap; torch and transformers load only when the
student is built or trained.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..backends import register_backend

if TYPE_CHECKING:
    from .base import BaseRecipe, pretrain_base, shipped_base
    from .generator import DemoGenerator, ErrorRates, draw_scene
    from .pipeline import DemoConfig, run_demo
    from .teacher import DemoTeacher
    from .vision import pretrain_vision
    from .world import Intent, Scene, Task, parse_request, render, sample_task

# Registered here (not only in teacher.py) so that naming the backend works as soon as the
# package is imported; the class itself is imported on first use.
register_backend("demo-teacher", "rationalrewards.demo.teacher:DemoTeacher")

_LAZY = {
    "BaseRecipe": ".base",
    "pretrain_base": ".base",
    "shipped_base": ".base",
    "DemoGenerator": ".generator",
    "ErrorRates": ".generator",
    "draw_scene": ".generator",
    "DemoConfig": ".pipeline",
    "run_demo": ".pipeline",
    "DemoTeacher": ".teacher",
    "pretrain_vision": ".vision",
    "Intent": ".world",
    "Scene": ".world",
    "Task": ".world",
    "parse_request": ".world",
    "render": ".world",
    "sample_task": ".world",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


__all__ = [
    "BaseRecipe",
    "DemoConfig",
    "DemoGenerator",
    "DemoTeacher",
    "ErrorRates",
    "Intent",
    "Scene",
    "Task",
    "draw_scene",
    "parse_request",
    "pretrain_base",
    "pretrain_vision",
    "render",
    "run_demo",
    "sample_task",
    "shipped_base",
]
