"""Pipeline families of the RL trainer, registered by name.

Each built-in family lives in its own module and registers itself with
:func:`register_family`; this package imports them. Adding a family is one new module here (a
:class:`FlowFamily` subclass decorated with ``@register_family``) plus its name in
``_BUILTIN``. Outside the package, ``register_family(MyFamily)`` before building the trainer
does the same. Only the standard library is imported at module level.
"""

from __future__ import annotations

import importlib

from .base import Cond, FlowFamily
from .registry import FAMILIES, family_for, register_family

_BUILTIN = ("flux", "sd3", "qwen_image")

for _name in _BUILTIN:
    importlib.import_module(f"{__name__}.{_name}")


def family_names() -> list[str]:
    """The registered family names (valid values of ``pipeline_family`` besides ``auto``)."""
    return list(FAMILIES)


__all__ = ["FAMILIES", "Cond", "FlowFamily", "family_for", "family_names", "register_family"]
