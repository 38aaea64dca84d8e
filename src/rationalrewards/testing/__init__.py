"""Test helpers: tiny offline checkpoints, local model servers and scripted judges.

Scripted judges (responders for :class:`~rationalrewards.testing.scripted_server.ScriptedServer`)
live in :mod:`rationalrewards.testing.judges`, registered by name: ``judge("pixel")``.

Attributes are imported lazily so that ``import rationalrewards.testing`` never pulls in torch or
transformers; only calling the helpers does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .judges import judge, judge_names, register_judge
    from .servers import start_transformers_serve, stop_transformers_serve, transformers_serve
    from .tiny_detectors import build_tiny_grounding_dino, build_tiny_sam
    from .tiny_models import build_tiny_qwen3vl, build_tiny_qwen3vl_cached
    from .tiny_pipelines import (
        build_tiny_flux,
        build_tiny_flux_cached,
        build_tiny_flux_kontext,
        build_tiny_flux_kontext_cached,
    )
    from .tiny_pipelines_rl import build_tiny_sd3, build_tiny_sd3_cached, random_flux_pipeline

_LAZY = {
    "judge": ".judges",
    "judge_names": ".judges",
    "register_judge": ".judges",
    "build_tiny_grounding_dino": ".tiny_detectors",
    "build_tiny_sam": ".tiny_detectors",
    "build_tiny_qwen3vl": ".tiny_models",
    "build_tiny_sd3": ".tiny_pipelines_rl",
    "build_tiny_sd3_cached": ".tiny_pipelines_rl",
    "random_flux_pipeline": ".tiny_pipelines_rl",
    "build_tiny_qwen3vl_cached": ".tiny_models",
    "build_tiny_flux": ".tiny_pipelines",
    "build_tiny_flux_cached": ".tiny_pipelines",
    "build_tiny_flux_kontext": ".tiny_pipelines",
    "build_tiny_flux_kontext_cached": ".tiny_pipelines",
    "start_transformers_serve": ".servers",
    "stop_transformers_serve": ".servers",
    "transformers_serve": ".servers",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "build_tiny_flux",
    "build_tiny_flux_cached",
    "build_tiny_flux_kontext",
    "build_tiny_flux_kontext_cached",
    "build_tiny_grounding_dino",
    "build_tiny_qwen3vl",
    "build_tiny_qwen3vl_cached",
    "build_tiny_sam",
    "build_tiny_sd3",
    "build_tiny_sd3_cached",
    "judge",
    "judge_names",
    "random_flux_pipeline",
    "register_judge",
    "start_transformers_serve",
    "stop_transformers_serve",
    "transformers_serve",
]
