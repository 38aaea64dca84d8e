"""Image generators for the Generate-Critique-Refine loop, registered by name.

Every generator has one method that matters::

    images = gen.generate(request, source=None, seed=7, n=4)   # -> list of 4 PIL RGB images

Seeding convention, shared by all generators: candidate ``i`` is produced from seed ``seed + i``
alone, so the same (request, seed) gives the same image whatever ``n`` is, and a loop that reuses
seeds across rounds isolates the effect of the request.

Built-in generators and their SPEC strings (the CLI's ``--generator``):

``diffusers:PATH_OR_ID``            any diffusers text-to-image pipeline, or an edit pipeline that
                                    takes ``image=`` (FLUX.1-Kontext, Qwen-Image-Edit) when a source
                                    image is given
``openai:BASE_URL[#model]``         an OpenAI-compatible images API (``/images/generations``, and
                                    ``/images/edits`` with a source image)
``python:module:function``          a Python callable (``module`` may also be a ``.py`` file path)

Third parties add their own with :func:`register_generator`. Generator failures raise
:class:`GeneratorError` with a message naming the generator and the cause; the loop records it.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import importlib.util
import inspect
import io
import os
import random
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

SourceLike = Any  # a PIL image, a list of them, or None


class GeneratorError(RuntimeError):
    """A generator could not produce images (bad spec, unreachable server, pipeline error...)."""


class GeneratorInputError(GeneratorError, ValueError):
    """The generator was asked for something it cannot do (bad spec, edit on a t2i pipeline...)."""


class Generator(ABC):
    """Turns a request (and optionally source images) into ``n`` images.

    Subclasses implement :meth:`generate`. ``max_concurrency`` says how many ``generate`` calls
    may run at once (1 for an in-process pipeline on one device; more for a remote API); the loop
    serialises calls beyond it.
    """

    name: str = "generator"
    max_concurrency: int = 1
    #: The SPEC string it was built from (set by :func:`generator_from_spec`).
    spec: str | None = None

    @abstractmethod
    def generate(self, request: str, *, source: SourceLike = None, seed: int = 0, n: int = 1) -> list[Image.Image]:
        """Return ``n`` RGB images; image ``i`` depends only on (request, source, ``seed + i``)."""

    async def agenerate(self, request: str, *, source: SourceLike = None, seed: int = 0, n: int = 1) -> list[Image.Image]:
        """Async twin; the default runs :meth:`generate` in a worker thread."""
        return await asyncio.to_thread(self.generate, request, source=source, seed=seed, n=n)

    def describe(self) -> dict[str, Any]:
        """A JSON-able description recorded in every trajectory."""
        return {"generator": self.name}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (GPU memory, HTTP clients)."""


def _as_rgb_list(out: Any, n: int, who: str) -> list[Image.Image]:
    if isinstance(out, Image.Image):
        out = [out]
    if not isinstance(out, (list, tuple)):
        raise GeneratorError(f"{who} returned {type(out).__name__}; expected a PIL image or a list of them")
    images = []
    for i, img in enumerate(out):
        if not isinstance(img, Image.Image):
            raise GeneratorError(f"{who} returned a {type(img).__name__} at position {i}; expected PIL images")
        images.append(img if img.mode == "RGB" else img.convert("RGB"))
    if len(images) != n:
        raise GeneratorError(f"{who} returned {len(images)} image(s) for n={n}")
    return images


def _sources(source: SourceLike) -> list[Image.Image]:
    if source is None:
        return []
    return list(source) if isinstance(source, (list, tuple)) else [source]


# ------------------------------------------------------------------------------------------------
# diffusers
# ------------------------------------------------------------------------------------------------


class DiffusersGenerator(Generator):
    """Any diffusers pipeline loaded with ``DiffusionPipeline.from_pretrained``.

    Text-to-image pipelines get ``prompt=request``; with a source image the pipeline must take an
    ``image=`` argument (FluxKontextPipeline, QwenImageEditPlusPipeline, ...). Each candidate gets
    its own ``torch.Generator`` seeded ``seed + i`` (on the CPU, so seeds mean the same on every
    device). Options left ``None`` keep the pipeline's own defaults.

    Args:
        model: a local folder or a hub id.
        device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:N``...
        dtype: ``auto`` (bfloat16 on cuda, float32 elsewhere), ``bfloat16``, ``float16``, ``float32``.
        steps: ``num_inference_steps``. guidance: ``guidance_scale``. width, height: output size
            (for pipelines with ``max_area``, such as Kontext, ``max_area`` defaults to width*height).
        negative_prompt: passed when the pipeline accepts it.
        call_kwargs: extra keyword arguments for every pipeline call (e.g. ``{"true_cfg_scale": 4}``).
        load_kwargs: extra keyword arguments for ``from_pretrained`` (e.g. ``{"variant": "fp16"}``).
        batch_size: most images per pipeline call (None: all ``n`` at once); seeds are per image,
            so chunking never changes the images.
        pipeline: an already-built pipeline object (then ``model`` is only a label).
    """

    name = "diffusers"
    max_concurrency = 1

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        steps: int | None = None,
        guidance: float | None = None,
        width: int | None = None,
        height: int | None = None,
        negative_prompt: str | None = None,
        call_kwargs: dict[str, Any] | None = None,
        load_kwargs: dict[str, Any] | None = None,
        batch_size: int | None = None,
        pipeline: Any = None,
    ):
        if not model and pipeline is None:
            raise GeneratorInputError("diffusers generator needs a model folder or hub id (diffusers:PATH_OR_ID)")
        self.model = str(model)
        self.device = device
        self.dtype = dtype
        self.steps = steps
        self.guidance = guidance
        self.width = width
        self.height = height
        self.negative_prompt = negative_prompt
        self.call_kwargs = dict(call_kwargs or {})
        self.load_kwargs = dict(load_kwargs or {})
        self.batch_size = batch_size if batch_size and batch_size > 0 else None
        self._pipe = pipeline
        self._params: set[str] | None = None
        self._lock = threading.Lock()

    def _resolve_device(self) -> str:
        import torch

        if self.device != "auto":
            return self.device
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"

    def _resolve_dtype(self, device: str) -> Any:
        import torch

        if self.dtype == "auto":
            return torch.bfloat16 if device.startswith("cuda") else torch.float32
        try:
            dtype = getattr(torch, self.dtype)
        except AttributeError:
            raise GeneratorInputError(f"unknown dtype {self.dtype!r}; use auto, bfloat16, float16 or float32") from None
        if not isinstance(dtype, torch.dtype):
            raise GeneratorInputError(f"unknown dtype {self.dtype!r}")
        return dtype

    def load(self) -> Any:
        """Load the pipeline (once); called by the first :meth:`generate`."""
        with self._lock:
            if self._pipe is None:
                try:
                    from diffusers import DiffusionPipeline
                except ImportError as exc:  # optional dependency
                    raise GeneratorError(
                        "the diffusers generator needs `pip install rationalrewards[rl]` (diffusers, torch)"
                    ) from exc
                device = self._resolve_device()
                dtype = self._resolve_dtype(device)
                local = Path(self.model).expanduser()
                # Hub ids also contain "/", so only explicit paths can be reported as missing.
                if self.model.startswith(("/", "./", "../", "~")) and not local.exists():
                    raise GeneratorInputError(f"diffusers pipeline folder not found: {self.model}")
                try:
                    pipe = DiffusionPipeline.from_pretrained(
                        str(local) if local.exists() else self.model, **{_dtype_keyword(): dtype}, **self.load_kwargs
                    )
                except Exception as exc:
                    raise GeneratorError(f"could not load diffusers pipeline {self.model!r}: {type(exc).__name__}: {exc}") from exc
                pipe.to(device)
                if hasattr(pipe, "set_progress_bar_config"):
                    pipe.set_progress_bar_config(disable=True)
                self._pipe = pipe
            if self._params is None:
                self._params = set(inspect.signature(self._pipe.__call__).parameters)
            return self._pipe

    def _call_kwargs(self, request: str, sources: list[Image.Image], seed: int, n: int) -> dict[str, Any]:
        import torch

        params = self._params or set()
        kwargs: dict[str, Any] = {"prompt": request, "num_images_per_prompt": n, "output_type": "pil"}
        # One CPU generator per image: diffusers draws image i's noise from generator i only.
        kwargs["generator"] = [torch.Generator("cpu").manual_seed(seed + i) for i in range(n)]
        if sources:
            if "image" not in params:
                raise GeneratorInputError(
                    f"pipeline {type(self._pipe).__name__} takes no source image; use an edit pipeline "
                    "(e.g. FluxKontextPipeline, QwenImageEditPlusPipeline) for edit tasks"
                )
            kwargs["image"] = sources[0] if len(sources) == 1 else sources
        optional = {
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance,
            "width": self.width,
            "height": self.height,
            "negative_prompt": self.negative_prompt,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None and k in params})
        if "max_area" in params and self.width and self.height:
            kwargs["max_area"] = self.width * self.height
        kwargs.update(self.call_kwargs)
        return kwargs

    def generate(self, request: str, *, source: SourceLike = None, seed: int = 0, n: int = 1) -> list[Image.Image]:
        pipe = self.load()
        step = self.batch_size or n
        images: list[Image.Image] = []
        for start in range(0, n, step):
            count = min(step, n - start)
            kwargs = self._call_kwargs(request, _sources(source), seed + start, count)
            try:
                with self._lock:
                    out = pipe(**kwargs)
            except GeneratorError:
                raise
            except Exception as exc:
                raise GeneratorError(f"diffusers pipeline {self.model!r} failed: {type(exc).__name__}: {exc}") from exc
            chunk = out.images if hasattr(out, "images") else out[0]
            images += _as_rgb_list(list(chunk), count, f"diffusers pipeline {self.model!r}")
        return images

    def describe(self) -> dict[str, Any]:
        return {
            "generator": self.name,
            "model": self.model,
            "pipeline": type(self._pipe).__name__ if self._pipe is not None else None,
            "steps": self.steps,
            "guidance": self.guidance,
            "width": self.width,
            "height": self.height,
            "call_kwargs": {k: v for k, v in self.call_kwargs.items() if isinstance(v, (str, int, float, bool))},
        }

    def close(self) -> None:
        self._pipe = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def _dtype_keyword() -> str:
    """``dtype`` on diffusers that renamed it (``torch_dtype`` then warns), else ``torch_dtype``."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


# ------------------------------------------------------------------------------------------------
# OpenAI-compatible images API
# ------------------------------------------------------------------------------------------------

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIImagesGenerator(Generator):
    """An OpenAI-compatible images API.

    Text-to-image: ``POST {base_url}/images/generations`` (JSON). With a source image:
    ``POST {base_url}/images/edits`` (multipart, the source as ``image``, several as ``image[]``).
    One request per candidate with ``n=1`` and ``seed = seed + i``, so every image is reproducible
    on servers that honour ``seed``; ``send_seed=None`` sends it except to api.openai.com (which
    rejects unknown fields). Answers may carry ``b64_json`` or a ``url`` (fetched). 429, 5xx,
    timeouts and connection errors are retried with jittered exponential backoff.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1``.
        model: the model name sent with each request (optional for single-model servers).
        api_key: bearer key (default ``$OPENAI_API_KEY``).
        size: ``"WxH"`` (sent when given). quality: sent when given.
        extra_body: more JSON fields (or form fields for edits) for every request.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        *,
        size: str | None = None,
        quality: str | None = None,
        send_seed: bool | None = None,
        timeout: float = 600.0,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        concurrency: int = 8,
        extra_body: dict[str, Any] | None = None,
    ):
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise GeneratorInputError(f"openai generator needs an http(s) base URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model or None
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.size = size
        self.quality = quality
        self.send_seed = ("api.openai.com" not in self.base_url) if send_seed is None else send_seed
        self.timeout = timeout
        self.max_retries = max(0, int(max_retries))
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_concurrency = max(1, int(concurrency))
        self.extra_body = dict(extra_body or {})
        self._client: Any = None
        self._client_lock = threading.Lock()

    def _http(self) -> Any:
        import httpx

        with self._client_lock:
            if self._client is None:
                headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
                self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(self.timeout, connect=10.0))
            return self._client

    def _fields(self, request: str, seed: int) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": request, "n": 1}
        if self.model:
            body["model"] = self.model
        if self.size:
            body["size"] = self.size
        if self.quality:
            body["quality"] = self.quality
        if self.send_seed:
            body["seed"] = seed
        body.update(self.extra_body)
        return body

    def _post(self, path: str, *, json_body: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
              files: list[tuple[str, tuple[str, bytes, str]]] | None = None) -> dict[str, Any]:
        import httpx

        url = f"{self.base_url}{path}"
        last = "no attempt made"
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            try:
                resp = self._http().post(url, json=json_body, data=data, files=files)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    try:
                        payload = resp.json()
                    except ValueError:
                        last = "answer is not JSON"
                    else:
                        if isinstance(payload, dict):
                            return payload
                        last = "answer is not a JSON object"
                else:
                    last = f"HTTP {resp.status_code}: {resp.text[:300]}"
                    if resp.status_code not in _RETRY_STATUS:
                        raise GeneratorError(f"images API {url} refused the request: {last}")
                    try:
                        retry_after = float(resp.headers.get("retry-after", ""))
                    except ValueError:
                        retry_after = None
            if attempt < self.max_retries:
                cap = min(self.backoff_max, self.backoff_base * (2**attempt))
                time.sleep(retry_after if retry_after is not None else random.uniform(0, cap))
        raise GeneratorError(f"images API {url} failed after {self.max_retries + 1} attempt(s): {last}")

    def _decode(self, payload: dict[str, Any], url: str) -> Image.Image:
        data = payload.get("data")
        if not isinstance(data, list) or not data or not isinstance(data[0], dict):
            raise GeneratorError(f"images API {url} answered without a 'data' list")
        item = data[0]
        if item.get("b64_json"):
            try:
                raw = base64.b64decode(item["b64_json"], validate=False)
            except (ValueError, TypeError) as exc:
                raise GeneratorError(f"images API {url} sent invalid base64: {exc}") from exc
        elif item.get("url"):
            resp = self._http().get(item["url"])
            if resp.status_code != 200:
                raise GeneratorError(f"could not fetch generated image {item['url']}: HTTP {resp.status_code}")
            raw = resp.content
        else:
            raise GeneratorError(f"images API {url} answer has neither b64_json nor url")
        try:
            img = Image.open(io.BytesIO(raw))
            img.load()
        except Exception as exc:
            raise GeneratorError(f"images API {url} sent an undecodable image: {exc}") from exc
        return img.convert("RGB")

    def _one(self, request: str, sources: list[Image.Image], seed: int) -> Image.Image:
        fields = self._fields(request, seed)
        if not sources:
            return self._decode(self._post("/images/generations", json_body=fields), "/images/generations")
        files = []
        key = "image" if len(sources) == 1 else "image[]"
        for i, img in enumerate(sources):
            buf = io.BytesIO()
            img.convert("RGB").save(buf, format="PNG")
            files.append((key, (f"source_{i}.png", buf.getvalue(), "image/png")))
        form = {k: (str(v) if not isinstance(v, str) else v) for k, v in fields.items()}
        return self._decode(self._post("/images/edits", data=form, files=files), "/images/edits")

    def generate(self, request: str, *, source: SourceLike = None, seed: int = 0, n: int = 1) -> list[Image.Image]:
        sources = _sources(source)
        if n == 1:
            return [self._one(request, sources, seed)]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(n, self.max_concurrency)) as pool:
            return list(pool.map(lambda i: self._one(request, sources, seed + i), range(n)))

    def describe(self) -> dict[str, Any]:
        return {"generator": self.name, "base_url": self.base_url, "model": self.model, "size": self.size,
                "send_seed": self.send_seed}

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None


# ------------------------------------------------------------------------------------------------
# Python callable
# ------------------------------------------------------------------------------------------------


class CallableGenerator(Generator):
    """Wraps a Python callable.

    If the callable has an ``n`` parameter it is called once as
    ``fn(request, source=..., seed=seed, n=n)`` and must return ``n`` images; otherwise it is called
    ``n`` times as ``fn(request, source=..., seed=seed + i)`` and returns one image each time. A
    ``source`` parameter is optional for t2i-only callables. Set ``max_concurrency`` > 1 only for
    thread-safe callables.
    """

    name = "python"

    def __init__(self, fn: Callable[..., Any], *, label: str | None = None, max_concurrency: int = 1):
        if not callable(fn):
            raise GeneratorInputError(f"python generator target is not callable: {fn!r}")
        self.fn = fn
        self.label = label or f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
        self.max_concurrency = max(1, int(max_concurrency))
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        self._batched = "n" in params
        self._takes_source = "source" in params or has_var_kw

    def generate(self, request: str, *, source: SourceLike = None, seed: int = 0, n: int = 1) -> list[Image.Image]:
        if source is not None and not self._takes_source:
            raise GeneratorInputError(f"python generator {self.label} takes no 'source' argument (t2i only)")
        extra = {"source": source} if self._takes_source else {}
        try:
            if self._batched:
                out = self.fn(request, seed=seed, n=n, **extra)
            else:
                out = [self.fn(request, seed=seed + i, **extra) for i in range(n)]
                out = [o[0] if isinstance(o, (list, tuple)) and len(o) == 1 else o for o in out]
        except GeneratorError:
            raise
        except Exception as exc:
            raise GeneratorError(f"python generator {self.label} raised {type(exc).__name__}: {exc}") from exc
        return _as_rgb_list(out, n, f"python generator {self.label}")

    def describe(self) -> dict[str, Any]:
        return {"generator": self.name, "callable": self.label}


def load_callable(target: str) -> Callable[..., Any]:
    """``module:function`` or ``path/to/file.py:function`` -> the callable (dotted attributes ok)."""
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise GeneratorInputError(f"python generator spec must be python:module:function, got {target!r}")
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise GeneratorInputError(f"python generator file not found: {path}")
        mod_id = f"_rr_generator_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(mod_id)
        if module is None:
            spec = importlib.util.spec_from_file_location(mod_id, path)
            if spec is None or spec.loader is None:
                raise GeneratorInputError(f"cannot import {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_id] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[mod_id]
                raise GeneratorInputError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise GeneratorInputError(f"cannot import python generator module {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise GeneratorInputError(f"{module_name} has no attribute {attr!r}") from None
    return obj


# ------------------------------------------------------------------------------------------------
# Registry and SPEC strings
# ------------------------------------------------------------------------------------------------


def _make_diffusers(target: str, **options: Any) -> Generator:
    keep = {"device", "dtype", "steps", "guidance", "width", "height", "negative_prompt", "call_kwargs", "load_kwargs",
            "batch_size"}
    return DiffusersGenerator(target, **{k: v for k, v in options.items() if k in keep and v is not None})


def _make_openai(target: str, **options: Any) -> Generator:
    base_url, _, model = target.partition("#")
    keep = {"api_key", "size", "quality", "send_seed", "timeout", "max_retries", "backoff_base", "backoff_max",
            "concurrency", "extra_body"}
    kwargs = {k: v for k, v in options.items() if k in keep and v is not None}
    if "size" not in kwargs and options.get("width") and options.get("height"):
        kwargs["size"] = f"{options['width']}x{options['height']}"
    return OpenAIImagesGenerator(base_url, model or options.get("model"), **kwargs)


def _make_python(target: str, **options: Any) -> Generator:
    obj = load_callable(target)
    if isinstance(obj, type) and issubclass(obj, Generator):
        return obj()
    if isinstance(obj, Generator):
        return obj
    return CallableGenerator(obj, label=target, max_concurrency=int(options.get("concurrency") or 1))


GeneratorFactory = Callable[..., Generator]
_REGISTRY: dict[str, GeneratorFactory | str] = {
    "diffusers": _make_diffusers,
    "openai": _make_openai,
    "python": _make_python,
}


def register_generator(name: str, factory: GeneratorFactory | str) -> None:
    """Register ``factory(target: str, **options) -> Generator`` under ``name`` (``name:target``
    specs), or ``"module:function"`` to import it on first use."""
    if not name or ":" in name:
        raise ValueError(f"invalid generator name {name!r}")
    _REGISTRY[name] = factory


def available_generators() -> list[str]:
    return sorted(_REGISTRY)


def generator_from_spec(spec: str | Generator, **options: Any) -> Generator:
    """Build a generator from ``NAME:TARGET`` (e.g. ``diffusers:black-forest-labs/FLUX.1-dev``).

    ``options`` are the generator settings (``device``, ``dtype``, ``steps``, ``guidance``,
    ``width``, ``height``, ``call_kwargs``, ``api_key``, ``size``...); each factory takes the ones
    it understands. A :class:`Generator` instance is returned unchanged.
    """
    if isinstance(spec, Generator):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise GeneratorInputError(
            f"generator spec must look like NAME:TARGET with NAME in {', '.join(available_generators())}; got {spec!r}"
        )
    name, _, target = spec.partition(":")
    factory = _REGISTRY.get(name)
    if factory is None:
        raise GeneratorInputError(f"unknown generator {name!r} in {spec!r}; registered: {', '.join(available_generators())}")
    if isinstance(factory, str):
        factory = load_callable(factory)
        _REGISTRY[name] = factory
    if not target:
        raise GeneratorInputError(f"generator spec {spec!r} has no target after '{name}:'")
    gen = factory(target, **options)
    if gen.spec is None:
        gen.spec = spec
    return gen


def parse_kv_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["steps=4", "true_cfg_scale=4.0", "_auto_resize=false"]`` -> typed dict (JSON values where
    they parse, strings otherwise)."""
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise GeneratorInputError(f"expected KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out
