"""Generate-Critique-Refine: test-time prompt refinement for any frozen image generator.

    from rationalrewards import RewardModel
    from rationalrewards.refine import RefineConfig, refine

    critic = RewardModel.from_openai("http://127.0.0.1:8000/v1", "RationalRewards-8B-T2I")
    traj = refine("a red bicycle", generator="diffusers:black-forest-labs/FLUX.1-dev", critic=critic,
                  out_dir="runs/bike", config=RefineConfig(rounds=3, candidates=2, threshold=0.9))

See ``docs/refine.md``. Attributes are imported lazily so that the CLI stays fast to start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .batch import arefine_batch, read_items, refine_batch, summarize
    from .generators import (
        CallableGenerator,
        DiffusersGenerator,
        Generator,
        GeneratorError,
        GeneratorInputError,
        OpenAIImagesGenerator,
        available_generators,
        generator_from_spec,
        register_generator,
    )
    from .loop import RefineConfig, RefineInputError, RefineLoop, arefine, refine
    from .refiner import Refiner, anchor_request, intent_overlap
    from .report import write_report
    from .trajectory import Trajectory, load_trajectory

_LAZY = {
    "arefine_batch": ".batch",
    "read_items": ".batch",
    "refine_batch": ".batch",
    "summarize": ".batch",
    "CallableGenerator": ".generators",
    "DiffusersGenerator": ".generators",
    "Generator": ".generators",
    "GeneratorError": ".generators",
    "GeneratorInputError": ".generators",
    "OpenAIImagesGenerator": ".generators",
    "available_generators": ".generators",
    "generator_from_spec": ".generators",
    "register_generator": ".generators",
    "RefineConfig": ".loop",
    "RefineInputError": ".loop",
    "RefineLoop": ".loop",
    "arefine": ".loop",
    "refine": ".loop",
    "Refiner": ".refiner",
    "anchor_request": ".refiner",
    "intent_overlap": ".refiner",
    "write_report": ".report",
    "Trajectory": ".trajectory",
    "load_trajectory": ".trajectory",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "CallableGenerator",
    "DiffusersGenerator",
    "Generator",
    "GeneratorError",
    "GeneratorInputError",
    "OpenAIImagesGenerator",
    "RefineConfig",
    "RefineInputError",
    "RefineLoop",
    "Refiner",
    "Trajectory",
    "anchor_request",
    "arefine",
    "arefine_batch",
    "available_generators",
    "generator_from_spec",
    "intent_overlap",
    "load_trajectory",
    "read_items",
    "refine",
    "refine_batch",
    "register_generator",
    "summarize",
    "write_report",
]
