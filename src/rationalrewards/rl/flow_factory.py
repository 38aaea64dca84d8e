"""RationalRewards as native Flow-Factory reward models (needs the ``flow_factory`` package).

Flow-Factory sorts reward models by base class (``PointwiseRewardModel`` /
``GroupwiseRewardModel``) and builds them as ``cls(config=..., accelerator=...)``, so these
thin subclasses wrap :mod:`rationalrewards.rl.adapters`. Point a reward entry of a
Flow-Factory config at one of them::

    rewards:
      - name: rationalrewards
        reward_model: rationalrewards.rl.flow_factory.RationalRewardsPointwise
        base_url: http://127.0.0.1:8000/v1      # or server_url: http://127.0.0.1:8080 (+ token)
        model: RationalRewards-8B-T2I
        batch_size: 32

Settings read from the entry: see :func:`rationalrewards.rl.adapters.reward_from_config`
(plus ``dimension`` and ``na_value``). Importing this module without Flow-Factory installed
raises ``ImportError`` naming the missing package.
"""

from __future__ import annotations

from typing import Any

try:
    from flow_factory.rewards.abc import GroupwiseRewardModel, PointwiseRewardModel, RewardModelOutput
except ImportError as exc:  # pragma: no cover - exercised only without the package
    raise ImportError(
        "rationalrewards.rl.flow_factory needs Flow-Factory (the flow_factory package); "
        "without it use rationalrewards.rl.PointwiseReward / GroupwiseReward directly"
    ) from exc

from .adapters import GroupwiseReward, PointwiseReward, RemoteGroupwiseReward, RemotePointwiseReward


class _Delegate:
    """Forwards Flow-Factory's call to a RationalRewards adapter and rewraps the output."""

    _impl_cls: type[PointwiseReward] = PointwiseReward
    _impl: PointwiseReward

    def _setup(self, config: Any, accelerator: Any) -> None:
        self._impl = self._impl_cls(config=config, accelerator=accelerator)
        # Flow-Factory resolved the device (config vs accelerator) in its own __init__.
        self._impl.device = getattr(self, "device", None) or self._impl.device
        self.required_fields = self._impl.required_fields

    def __call__(self, prompt: list[str], image: Any = None, condition_images: Any = None,
                 **kwargs: Any) -> Any:
        out = self._impl(prompt, image, condition_images, **kwargs)
        return RewardModelOutput(rewards=out.rewards, extra_info=out.extra_info)

    @property
    def last_batch(self) -> Any:
        return self._impl.last_batch


class RationalRewardsPointwise(_Delegate, PointwiseRewardModel):
    """Pointwise: each image scored on its own (``aggregation: sum``)."""

    required_fields = ("prompt", "image")
    use_tensor_inputs = False
    _impl_cls = PointwiseReward

    def __init__(self, config: Any, accelerator: Any) -> None:
        PointwiseRewardModel.__init__(self, config, accelerator)
        self._setup(config, accelerator)


class RationalRewardsGroupwise(_Delegate, GroupwiseRewardModel):
    """Groupwise: called once per group, so ``aggregation: gdpo`` normalises within it."""

    required_fields = ("prompt", "image")
    use_tensor_inputs = False
    _impl_cls = GroupwiseReward

    def __init__(self, config: Any, accelerator: Any) -> None:
        GroupwiseRewardModel.__init__(self, config, accelerator)
        self._setup(config, accelerator)


class RationalRewardsRemotePointwise(RationalRewardsPointwise):
    """Pointwise over HTTP (``server_url`` and ``token`` in the entry)."""

    _impl_cls = RemotePointwiseReward


class RationalRewardsRemoteGroupwise(RationalRewardsGroupwise):
    """Groupwise over HTTP."""

    _impl_cls = RemoteGroupwiseReward


__all__ = [
    "RationalRewardsGroupwise",
    "RationalRewardsPointwise",
    "RationalRewardsRemoteGroupwise",
    "RationalRewardsRemotePointwise",
]
