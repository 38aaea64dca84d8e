"""The Ray executor: a pool of Ray actors, each holding one judge, fed by the stage's driver.

Why actors and not Ray Data's ``map_batches``: the stages already stream their inputs, keep
their own resumable outputs and want each result the moment it exists (progress, incremental
writes, exact resume). An actor pool fits that shape with no second copy of the bookkeeping:
the driver keeps a bounded number of calls in flight (``--concurrency``), each call carries one
item (paths, not pixels), and the actor that receives it reads the images and asks its judge.

Fault handling is Ray's: actors are created with ``max_restarts=-1`` and
``max_task_retries=-1``, so when a worker process dies Ray starts a new one (running the
constructor again) and re-sends the calls that were in flight. The driver writes each result
once, when its call returns, so a retried call can cost a second request to the judge but
never a lost or duplicated row.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import os
from collections.abc import Callable
from typing import Any

from ..backends.base import Backend, BackendError, Generation, SamplingParams
from ..critique.model import RewardModel, split_options
from ..critique.schema import CompareResult, CritiqueResult, failed_compare, failed_critique
from .options import ExecutorOptions

# How long actors may take to be placed and built before the run gives up with the reason
# (a GPU actor on a cluster without GPUs would otherwise wait forever).
PLACEMENT_TIMEOUT_S = float(os.environ.get("RATIONALREWARDS_RAY_PLACEMENT_TIMEOUT", "300"))


def _ray() -> Any:
    # A plain import: without the extra the ModuleNotFoundError names `ray`, which the CLI maps
    # to `pip install 'rationalrewards[ray]'` (exit 2).
    import ray

    return ray


def connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), or start a local instance; returns
    True when this call connected the process (the caller then disconnects it when done)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
                              "configure_logging": False}
    if address:
        kwargs["address"] = address
    # A new local instance binds where Ray decides: Ray 2.60 listens on every interface even when
    # asked for 127.0.0.1, guarded by its token authentication (docs/scale.md, "Limits").
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BackendError(f"cannot join the Ray cluster at {address or os.environ.get('RAY_ADDRESS')}: {exc}") from exc
    return True


class _Holder:
    """Body of every actor: one object built by ``factory(*args, **kwargs)`` in the worker,
    whose (possibly async) methods the driver calls by dotted name (``backend.agenerate``)."""

    def __init__(self, factory: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.obj = factory(*args, **kwargs)

    async def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        target: Any = self.obj
        for part in method.split("."):
            target = getattr(target, part)
        result = target(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    def pid(self) -> int:
        return os.getpid()


class RayPool:
    """Ray actors that each hold ``factory(*args, **kwargs)``; :meth:`call` runs a method on the
    actor with the fewest calls in flight.

    ``per_worker(n)`` gives extra keyword arguments once the number of actors ``n`` is known
    (each judge's share of the concurrency)."""

    def __init__(self, factory: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
                 *, executor: ExecutorOptions, per_worker: Callable[[int], dict[str, Any]] | None = None):
        ray = _ray()
        self.executor = executor
        self._closed = False
        self._connected_here = connect(executor.address)
        self.actors: list[Any] = []
        try:
            n = executor.workers or self.default_workers(executor)
            self.size = n
            extra = per_worker(n) if per_worker else {}
            actor = ray.remote(_Holder).options(
                num_cpus=executor.num_cpus, num_gpus=executor.num_gpus or None,
                max_restarts=-1, max_task_retries=-1,
            )
            self.actors = [actor.remote(factory, args, {**(kwargs or {}), **extra}) for _ in range(n)]
            self.load = [0] * n
            self._wait_placed()
        except BaseException:
            # Actors that did start would otherwise live on in a cluster this process only joined.
            for a in self.actors:
                ray.kill(a, no_restart=True)
            self._disconnect()
            raise

    @staticmethod
    def default_workers(executor: ExecutorOptions) -> int:
        res = _ray().cluster_resources()
        if executor.num_gpus:
            gpus = res.get("GPU", 0.0)
            if gpus < executor.num_gpus:
                raise BackendError(f"--ray-num-gpus {executor.num_gpus:g}: the Ray cluster has {gpus:g} GPUs")
            return max(1, int(gpus // executor.num_gpus))
        cpus = res.get("CPU", 1.0)
        return max(1, int(cpus // executor.num_cpus) if executor.num_cpus else int(cpus))

    def _wait_placed(self) -> None:
        ray = _ray()
        refs = [a.pid.remote() for a in self.actors]
        _, pending = ray.wait(refs, num_returns=len(refs), timeout=PLACEMENT_TIMEOUT_S)
        if pending:
            res = ray.cluster_resources()
            raise BackendError(
                f"{len(pending)} of {len(refs)} Ray workers were not started within {PLACEMENT_TIMEOUT_S:g} s "
                f"(each asks {self.executor.num_cpus:g} CPU, {self.executor.num_gpus:g} GPU; the cluster has "
                f"{res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU): lower --ray-workers or the per-worker needs")
        try:
            ray.get(refs)
        except ray.exceptions.RayActorError as exc:
            # The judge could not be built on a worker (a model folder missing on that node, ...).
            raise BackendError(f"a Ray worker could not build its judge: {_cause(exc)}") from None

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``await obj.<method>(*args, **kwargs)`` on the least busy actor (``method`` may be
        dotted: ``backend.agenerate``)."""
        i = min(range(self.size), key=self.load.__getitem__)
        self.load[i] += 1
        try:
            return await self.actors[i].call.remote(method, args, kwargs)
        finally:
            self.load[i] -= 1

    async def call_or_failed(self, if_lost: Callable[[str], Any], method: str, *args: Any, **kwargs: Any) -> Any:
        """Like :meth:`call`, but a worker gone for good (:func:`worker_lost`) gives
        ``if_lost(reason)``, the stage's failed result, instead of an exception."""
        try:
            return await self.call(method, *args, **kwargs)
        except Exception as exc:
            lost = worker_lost(exc)
            if lost is None:
                raise
            return if_lost(lost)

    async def broadcast(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        return list(await asyncio.gather(*(a.call.remote(method, args, kwargs) for a in self.actors)))

    def worker_pids(self, timeout: float = 120.0) -> list[int]:
        """The current process id of each actor (tests kill one to see Ray replace it); waits
        while an actor is being restarted, at most ``timeout`` seconds (then GetTimeoutError)."""
        ray = _ray()
        return list(ray.get([a.pid.remote() for a in self.actors], timeout=timeout))

    async def aclose(self, method: str | None = None) -> None:
        """Let each judge close its clients (``method``), then end the actors and, when this pool
        connected the process to Ray, disconnect it (stopping a local instance it started)."""
        ray = _ray()
        if self._closed or not ray.is_initialized():
            return
        self._closed = True
        if method is not None:
            # A worker that cannot close cleanly is ended below anyway.
            with contextlib.suppress(asyncio.TimeoutError, ray.exceptions.RayError):
                await asyncio.wait_for(self.broadcast(method), timeout=30)
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self._disconnect()

    def _disconnect(self) -> None:
        if self._connected_here:
            self._connected_here = False
            _ray().shutdown()


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def worker_lost(exc: BaseException) -> str | None:
    """The reason when ``exc`` says a Ray worker (or its result) is gone for good, else None.
    Such a call becomes a failed item (retried when the stage is rerun), like a backend error."""
    ray = _ray()
    if isinstance(exc, (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError)):
        return f"Ray worker lost: {_cause(exc)}"
    return None


class RayBackend(Backend):
    """The backend side of a :class:`RayRewardModel`: generation requests go to an actor's own
    backend. ``describe()`` is the actors' backend's, so reports do not depend on the executor."""

    def __init__(self, pool: RayPool, description: dict[str, Any]):
        self.pool = pool
        self._description = description

    async def agenerate(self, messages: list[dict[str, Any]], params: SamplingParams) -> Generation:
        return await self.pool.call_or_failed(lambda lost: Generation(text=None, error=lost),
                                              "backend.agenerate", messages, params)

    async def aready(self, timeout: float = 60.0) -> bool:
        return all(await self.pool.broadcast("aready", timeout))

    async def aclose(self) -> None:
        await self.pool.aclose("aclose")

    def describe(self) -> dict[str, Any]:
        return dict(self._description)


class RayRewardModel(RewardModel):
    """A :class:`RewardModel` whose judgements run on Ray actors, one ``RewardModel`` each, built
    from the same options as a local one (see :func:`rationalrewards.executors.reward_model`).

    ``concurrency`` stays the number of judgements in flight in all; each actor's backend gets
    its share. Items travel as they were given (a path stays a path) and are read by the actor.
    """

    def __init__(self, options: dict[str, Any], executor: ExecutorOptions):
        _, model_kwargs = split_options(options)  # a bad option fails here, before any actor starts
        total = int(options.get("concurrency") or model_kwargs.get("concurrency") or 32)

        def per_worker(n: int) -> dict[str, Any]:
            return {"concurrency": max(1, math.ceil(total / n))}

        self.pool = RayPool(RewardModel.from_options, (), dict(options), executor=executor, per_worker=per_worker)
        try:
            description = _ray().get(self.pool.actors[0].call.remote("backend.describe", (), {}))
        except BaseException:
            asyncio.run(self.pool.aclose())
            raise
        model_kwargs["concurrency"] = total
        super().__init__(RayBackend(self.pool, description), **model_kwargs)

    @property
    def workers(self) -> int:
        return self.pool.size

    async def acritique(self, prompt: str, image: Any, source: Any = None, **kwargs: Any) -> CritiqueResult:
        return await self.pool.call_or_failed(
            lambda lost: failed_critique("edit" if source else "t2i", "backend", lost, id=kwargs.get("id")),
            "acritique", prompt, image, source, **kwargs)

    async def acompare(self, prompt: str, image_a: Any, image_b: Any, source: Any = None,
                       **kwargs: Any) -> CompareResult:
        return await self.pool.call_or_failed(
            lambda lost: failed_compare("edit" if source else "t2i", "backend", lost, id=kwargs.get("id"),
                                        mode=kwargs.get("mode", "pairwise")),
            "acompare", prompt, image_a, image_b, source, **kwargs)

    def close(self) -> None:
        super().close()  # runs backend.aclose on this model's loop when it was used
        if not self.pool._closed:
            asyncio.run(self.pool.aclose("aclose"))


__all__ = ["RayBackend", "RayPool", "RayRewardModel", "connect", "worker_lost"]
