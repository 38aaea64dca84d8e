"""The reward server (``rationalrewards serve``) and its client.

``create_app`` imports FastAPI; it is loaded on first use so ``import rationalrewards.serve``
stays light (the client only needs httpx).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "RemoteReward",
    "RemoteRewardError",
    "ServerMetrics",
    "ServerThread",
    "create_app",
    "decode_wire_image",
]
