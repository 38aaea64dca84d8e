"""Backends, registered by name and imported lazily.

``openai``       any OpenAI-compatible chat server (vLLM, SGLang, transformers serve, hosted)
``transformers`` in-process ``AutoModelForImageTextToText``

Third parties add their own with :func:`register_backend`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .base import Backend, BackendError, Generation, SamplingParams

_REGISTRY: dict[str, str | type[Backend]] = {
    "openai": "rationalrewards.backends.openai_http:OpenAIBackend",
    "transformers": "rationalrewards.backends.transformers_local:TransformersBackend",
}


def register_backend(name: str, target: str | type[Backend]) -> None:
    """Register a backend class, or ``"module:Class"`` to import it on first use."""
    _REGISTRY[name] = target


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def get_backend_class(name: str) -> type[Backend]:
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; registered: {', '.join(available_backends())}") from None
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
        _REGISTRY[name] = target
    return target  # type: ignore[return-value]


def create_backend(name: str, /, **kwargs: Any) -> Backend:
    return get_backend_class(name)(**kwargs)


def backend_from_options(
    *,
    base_url: str | list[str] | None = None,
    model: str | None = None,
    api_key: str | None = None,
    cache: str | Path | None = None,
    concurrency: int = 64,
    timeout: float = 300.0,
    max_retries: int = 4,
    device: str | None = "auto",
    dtype: str | None = "auto",
    batch_size: int = 8,
    max_pixels: int | None = None,
    adapter: str | None = None,
) -> Backend:
    """The contract's backend selection: ``--base-url`` (+ ``--model``) for a server, else
    ``--model PATH_OR_HF_ID`` in process."""
    backend: Backend
    if base_url:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        backend = create_backend(
            "openai",
            base_url=urls,
            model=model,
            api_key=api_key,
            concurrency=concurrency,
            timeout=timeout,
            max_retries=max_retries,
        )
    elif model:
        kwargs: dict[str, Any] = {"device": device, "dtype": dtype, "batch_size": batch_size, "adapter": adapter}
        if max_pixels:
            kwargs["max_pixels"] = max_pixels
        backend = create_backend("transformers", model=model, **kwargs)
    else:
        raise ValueError("choose a backend: --base-url URL (with --model NAME) or --model PATH_OR_HF_ID")
    if cache:
        from .cache import CachedBackend

        backend = CachedBackend(backend, cache)
    return backend


__all__ = [
    "Backend",
    "BackendError",
    "Generation",
    "SamplingParams",
    "available_backends",
    "backend_from_options",
    "create_backend",
    "get_backend_class",
    "register_backend",
]
