"""The registry of pipeline families, by name (``pipeline_family: NAME``) and by pipeline class."""

from __future__ import annotations

from typing import Any

from .base import FlowFamily

FAMILIES: dict[str, type[FlowFamily]] = {}


def register_family(cls: type[FlowFamily]) -> type[FlowFamily]:
    """Add a pipeline family (usable as a decorator); ``pipeline_family: NAME`` then selects it."""
    FAMILIES[cls.name] = cls
    return cls


def family_for(pipe: Any, name: str = "auto", **kwargs: Any) -> FlowFamily:
    """The :class:`FlowFamily` for ``pipe`` (by class name when ``name="auto"``)."""
    if name != "auto":
        if name not in FAMILIES:
            raise ValueError(f"unknown pipeline family {name!r}; known: {', '.join(FAMILIES)}")
        return FAMILIES[name](pipe, **kwargs)
    # Families match exact pipeline class names, so the registration order does not matter.
    for cls in FAMILIES.values():
        if cls.matches(pipe):
            return cls(pipe, **kwargs)
    known = sorted(c for f in FAMILIES.values() for c in f.pipeline_classes)
    raise ValueError(f"no DiffusionNFT support for {type(pipe).__name__}; supported pipelines: {', '.join(known)} "
                     "(set pipeline_family explicitly, or register_family() your own)")
