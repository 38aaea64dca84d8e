"""In-process backend: ``AutoModelForImageTextToText`` + ``AutoProcessor`` (Qwen3-VL and kin).

Concurrent ``agenerate`` calls are gathered into batches (up to ``batch_size``, waiting at most
``batch_wait_ms`` for companions) and generated together with left padding, so a pipeline that
fires many critiques at once gets batched GPU work without knowing about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..images import DEFAULT_MAX_PIXELS, PreparedImage
from .base import Backend, BackendError, Generation, SamplingParams


def _missing(module: str) -> ModuleNotFoundError:
    top = module.split(".")[0]
    return ModuleNotFoundError(
        f"the transformers backend needs the 'local' extra: pip install 'rationalrewards[local]' "
        f"(no module named {top!r})", name=top)


def _require_local_stack() -> None:
    """Fail at construction, not at the first generation, when torch/transformers are absent."""
    import importlib.util

    for module in ("torch", "transformers"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise _missing(module)


@dataclass
class _Pending:
    messages: list[dict[str, Any]]
    params: SamplingParams
    future: asyncio.Future[Generation]


def _resolve_device(device: str | None) -> str:
    import torch

    if device and device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _resolve_dtype(dtype: str | None, device: str) -> Any:
    import torch

    if dtype in (None, "auto"):
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
             "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(table)}")
    return table[dtype]


class TransformersBackend(Backend):
    """Runs a local or hub checkpoint in this process.

    Args:
        model: folder or hub id (e.g. ``TIGER-Lab/RationalRewards-8B-T2I``).
        device: ``cuda``, ``cuda:1``, ``cpu``, ``mps`` or ``auto``.
        dtype: ``bfloat16``, ``float16``, ``float32`` or ``auto`` (bf16 on capable GPUs).
        batch_size: most conversations generated together.
        max_pixels: images are already downscaled to this by the image loader; the processor
            is told the same cap so it never upsamples past it.
        adapter: optional PEFT adapter folder applied on top of ``model``.
    """

    name = "transformers"

    def __init__(
        self,
        model: str | Path,
        *,
        device: str | None = "auto",
        dtype: str | None = "auto",
        batch_size: int = 8,
        batch_wait_ms: float = 5.0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        attn_implementation: str | None = None,
        adapter: str | Path | None = None,
        trust_remote_code: bool = False,
    ):
        _require_local_stack()
        self.model_path = str(model)
        self.model_name = self.model_path
        self.device_spec = device
        self.dtype_spec = dtype
        self.batch_size = max(1, int(batch_size))
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.max_pixels = max_pixels
        self.attn_implementation = attn_implementation
        self.adapter = str(adapter) if adapter else None
        self.trust_remote_code = trust_remote_code
        self._model: Any = None
        self._processor: Any = None
        self._device = "cpu"
        self._load_lock = threading.Lock()
        self._gen_lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._flush_task: asyncio.Task[None] | None = None
        self.batches_run = 0
        self.batch_sizes: list[int] = []

    @classmethod
    def from_components(cls, model: Any, processor: Any, *, name: str = "in-memory", **kwargs: Any) -> TransformersBackend:
        """Wrap a model and processor already in memory (e.g. inside a training job that shares
        the GPU, or a benchmark of a randomly initialised config)."""
        backend = cls(name, **kwargs)
        tok = getattr(processor, "tokenizer", processor)
        tok.padding_side = "left"
        backend._model, backend._processor = model, processor
        backend._device = str(next(model.parameters()).device)
        return backend

    # -- loading ------------------------------------------------------------------------------
    def load(self) -> None:
        """Load processor and model (idempotent; called lazily on first use)."""
        with self._load_lock:
            if self._model is not None:
                return
            try:
                from transformers import AutoModelForImageTextToText, AutoProcessor
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise _missing(exc.name or "transformers") from exc
            device = _resolve_device(self.device_spec)
            dtype = _resolve_dtype(self.dtype_spec, device)
            try:
                processor = AutoProcessor.from_pretrained(self.model_path, trust_remote_code=self.trust_remote_code)
            except OSError as exc:
                raise BackendError(f"cannot load processor from {self.model_path}: {exc}") from exc
            if not hasattr(processor, "image_processor"):
                # transformers quietly falls back to the bare tokenizer when the image processor
                # cannot be built (torchvision missing or broken); images would then be ignored.
                raise BackendError(
                    f"AutoProcessor for {self.model_path} has no image processor (is torchvision "
                    "importable?); refusing to run a vision judge without images"
                )
            tok = getattr(processor, "tokenizer", processor)
            tok.padding_side = "left"
            ip = processor.image_processor
            with contextlib.suppress(Exception):
                size = dict(getattr(ip, "size", {}) or {})
                if "longest_edge" in size:
                    size["longest_edge"] = min(int(size["longest_edge"]), self.max_pixels)
                    ip.size = size
                if hasattr(ip, "max_pixels") and ip.max_pixels:
                    ip.max_pixels = min(int(ip.max_pixels), self.max_pixels)
            kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": self.trust_remote_code}
            if self.attn_implementation:
                kwargs["attn_implementation"] = self.attn_implementation
            try:
                model = AutoModelForImageTextToText.from_pretrained(self.model_path, **kwargs)
            except OSError as exc:
                raise BackendError(f"cannot load model from {self.model_path}: {exc}") from exc
            if self.adapter:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, self.adapter).merge_and_unload()
            model.to(device)
            model.eval()
            self._processor, self._model, self._device = processor, model, device

    @property
    def processor(self) -> Any:
        self.load()
        return self._processor

    @property
    def model(self) -> Any:
        self.load()
        return self._model

    # -- generation ---------------------------------------------------------------------------
    @staticmethod
    def _hf_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for msg in messages:
            content = msg["content"]
            if isinstance(content, str):
                out.append({"role": msg["role"], "content": [{"type": "text", "text": content}]})
                continue
            parts = []
            for part in content:
                if part["type"] == "text":
                    parts.append({"type": "text", "text": part["text"]})
                else:
                    img = part["image"]
                    parts.append({"type": "image", "image": img.image if isinstance(img, PreparedImage) else img})
            out.append({"role": msg["role"], "content": parts})
        return out

    def generate_batch(self, batch: Sequence[list[dict[str, Any]]], params: SamplingParams) -> list[Generation]:
        """Synchronous batched generation (left padding). Thread-safe."""
        import torch

        self.load()
        start = time.perf_counter()
        with self._gen_lock:
            processor, model = self._processor, self._model
            conversations = [self._hf_messages(m) for m in batch]
            inputs = processor.apply_chat_template(
                conversations,
                tokenize=True,
                add_generation_prompt=True,
                return_dict=True,
                return_tensors="pt",
                processor_kwargs={"padding": True},
            ).to(self._device)
            gen_kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens}
            if params.temperature and params.temperature > 0:
                gen_kwargs.update(do_sample=True, temperature=params.temperature)
                if params.top_p is not None:
                    gen_kwargs["top_p"] = params.top_p
            else:
                gen_kwargs.update(do_sample=False)
            if params.stop:
                gen_kwargs.update(stop_strings=list(params.stop), tokenizer=processor.tokenizer)
            if params.seed is not None:
                torch.manual_seed(params.seed)
            tok = processor.tokenizer
            pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            with torch.inference_mode():
                out = model.generate(**inputs, pad_token_id=pad_id, **gen_kwargs)
            prompt_len = inputs["input_ids"].shape[1]
            new_tokens = out[:, prompt_len:]
            texts = processor.batch_decode(new_tokens, skip_special_tokens=True)
            attention = inputs["attention_mask"]
        elapsed = time.perf_counter() - start
        gens = []
        eos_ids = set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
                      else [model.generation_config.eos_token_id])
        for i, text in enumerate(texts):
            row = new_tokens[i].tolist()
            n_new = sum(1 for t in row if t != pad_id)
            hit_eos = any(t in eos_ids for t in row)
            text = _cut_at_stop(text, params.stop)
            gens.append(
                Generation(
                    text=text,
                    finish_reason="stop" if hit_eos or (params.stop and n_new < params.max_tokens) else "length",
                    prompt_tokens=int(attention[i].sum()),
                    completion_tokens=n_new,
                    latency_s=elapsed,
                )
            )
        self.batches_run += 1
        self.batch_sizes.append(len(batch))
        return gens

    async def agenerate(self, messages: list[dict[str, Any]], params: SamplingParams) -> Generation:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Generation] = loop.create_future()
        self._pending.append(_Pending(messages, params, fut))
        if len(self._pending) >= self.batch_size:
            self._schedule(0.0)
        else:
            self._schedule(self.batch_wait_s)
        return await fut

    async def agenerate_many(self, batch: Sequence[list[dict[str, Any]]], params: SamplingParams) -> list[Generation]:
        return await asyncio.gather(*(self.agenerate(m, params) for m in batch))

    def _schedule(self, delay: float) -> None:
        if self._flush_task is not None and not self._flush_task.done() and delay > 0:
            return
        self._flush_task = asyncio.get_running_loop().create_task(self._flush_after(delay))

    async def _flush_after(self, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        while self._pending:
            # Only requests with identical sampling go into one generate() call.
            first = self._pending[0].params
            group = [p for p in self._pending if p.params == first][: self.batch_size]
            for p in group:
                self._pending.remove(p)
            try:
                gens = await asyncio.to_thread(self.generate_batch, [p.messages for p in group], first)
            except ImportError as exc:
                # A missing package is not this batch's failure: every item would fail the same
                # way, so it reaches the caller (the CLI names the extra to install).
                for p in group:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            except Exception as exc:  # a failed batch fails its items, visibly, and nothing else
                err = f"local generation failed: {type(exc).__name__}: {exc}"
                gens = [Generation(text=None, error=err) for _ in group]
            for p, g in zip(group, gens, strict=True):
                if not p.future.done():
                    p.future.set_result(g)

    async def aready(self, timeout: float = 60.0) -> bool:
        await asyncio.to_thread(self.load)
        return True

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_path, "device": self._device, "batch_size": self.batch_size}


def _cut_at_stop(text: str, stop: tuple[str, ...] | None) -> str:
    if not stop:
        return text
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]
