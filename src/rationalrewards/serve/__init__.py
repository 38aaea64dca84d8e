"""The reward server (``rationalrewards serve``) and its client.

``create_app`` imports FastAPI; it is loaded on first use so ``import rationalrewards.serve``
stays light (the client only needs httpx).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app, decode_wire_image
    from .client import RemoteReward, RemoteRewardError
    from .metrics import ServerMetrics
    from .server import ServerThread

_LAZY = {
    "create_app": ".app",
    "decode_wire_image": ".app",
    "RemoteReward": ".client",
    "RemoteRewardError": ".client",
    "ServerMetrics": ".metrics",
    "ServerThread": ".server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "RemoteReward",
    "RemoteRewardError",
    "ServerMetrics",
    "ServerThread",
    "create_app",
    "decode_wire_image",
]
