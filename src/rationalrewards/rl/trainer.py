"""``NFTTrainer``: DiffusionNFT with LoRA on a diffusers flow-matching pipeline, rewarded by a judge.

    from rationalrewards.rl.config import NFTConfig
    from rationalrewards.rl.trainer import NFTTrainer

    cfg = NFTConfig.from_yaml("examples/rl_flux_t2i.yaml")
    summary = NFTTrainer(cfg).train()          # or NFTTrainer(cfg, reward=my_reward, pipeline=pipe)

One iteration ("step"):

1. take ``groups_per_step`` prompt rows (each a prompt, plus a source image for edits) in a
   seeded order that skips retired groups;
2. sample ``group_size`` images per row with the OLD policy adapter and a deterministic ODE
   sampler; as soon as a group's images are decoded they go to the reward in the background,
   so the judge works while the next groups are sampled;
3. advantages per group keyed by (prompt, source-image content), global or per-group std,
   clipped, mapped to optimality probabilities; failed rewards are masked out and counted;
   groups with std < retire_std and mean > retire_mean are retired;
4. DiffusionNFT updates of the trained adapter on the same samples (forward process);
5. old <- decay-schedule EMA of the trained adapter; EMA weights for evaluation; logs
   (JSONL, TensorBoard if installed, W&B if asked), reward-hacking monitor, periodic
   evaluation and checkpoints that resume exactly.

Multi-GPU and multi-node: run the same command under ``accelerate launch``; each process samples
its share of the groups, rewards are gathered for the statistics and gradients are averaged.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import math
import os
import random
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..critique.model import BackgroundLoop
from ..io import InputFileError, atomic_write_json, atomic_write_text, read_jsonl
from . import nft, safe_state
from .config import ConfigError, NFTConfig
from .monitor import RewardHackingMonitor

SOURCE_KEYS = ("source", "source_image", "image_path", "image")
CHECKPOINT_PREFIX = "step-"


class RewardUnavailableError(RuntimeError):
    """No sample of several consecutive iterations got a valid reward (the judge is down or broken)."""


# -- data ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptRow:
    """One prompt group: the request, its source image for edits, and the group key."""

    id: str
    prompt: str
    source: str | None
    key: str


def group_key(prompt: str, source_sha256: str | None) -> str:
    """Groups are keyed by the prompt AND the source image's content: the same instruction on two
    different sources is two groups."""
    h = hashlib.sha256(prompt.encode("utf-8"))
    h.update(b"\0" + (source_sha256 or "").encode("ascii"))
    return h.hexdigest()[:24]


def load_prompt_rows(
    path: str | Path,
    *,
    task: str,
    prompt_key: str = "prompt",
    source_key: str | None = None,
) -> tuple[list[PromptRow], list[dict[str, Any]]]:
    """Read a prompt JSONL; returns (usable rows, skipped rows with a ``reason``).

    Edit rows need a readable source image (``source_key``, or the first of
    source/source_image/image_path/image); paths are relative to the JSONL's folder. A row
    with a bad image is skipped with its reason, not fatal; no usable row at all is.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    rows = read_jsonl(path)
    out: list[PromptRow] = []
    skipped: list[dict[str, Any]] = []
    for row in rows:
        line = row.get("_line")
        rid = str(row.get("id") if row.get("id") not in (None, "") else f"line-{line}")
        prompt = row.get(prompt_key)
        if not isinstance(prompt, str) or not prompt.strip():
            skipped.append({"id": rid, "line": line, "reason": f"missing or empty {prompt_key!r}"})
            continue
        source_path: str | None = None
        source_sha: str | None = None
        if task == "edit":
            keys = [source_key] if source_key else list(SOURCE_KEYS)
            value = next((row[k] for k in keys if row.get(k) not in (None, "")), None)
            if isinstance(value, list):
                value = value[0] if len(value) == 1 else None
            if not isinstance(value, str):
                skipped.append({"id": rid, "line": line, "reason": f"edit row needs one source image path in {keys}"})
                continue
            p = Path(value).expanduser()
            if not p.is_absolute():
                p = path.parent / p
            try:
                data = p.read_bytes()
                with Image.open(p) as img:
                    img.verify()
            except (OSError, UnidentifiedImageError) as exc:
                skipped.append({"id": rid, "line": line, "reason": f"unreadable source image {str(p)!r}: {exc}"})
                continue
            source_path, source_sha = str(p), hashlib.sha256(data).hexdigest()
        out.append(PromptRow(id=rid, prompt=prompt, source=source_path, key=group_key(prompt, source_sha)))
    if not out:
        reasons = "; ".join(f"{s['id']}: {s['reason']}" for s in skipped[:3])
        raise InputFileError(f"{path}: no usable prompt rows" + (f" ({reasons})" if reasons else ""))
    return out, skipped


def _open_source(path: str) -> Any:
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB")


# -- rewards ------------------------------------------------------------------------------------
@dataclass
class ScoredBatch:
    """A reward result in the trainer's terms (any reward object is normalised to this)."""

    rewards: list[float]
    valid: list[bool]
    base: list[float]
    scores: dict[str, list[float]]
    failure_kinds: list[str | None]
    critiques: list[Any] | None = None

    @classmethod
    def from_result(cls, result: Any, n: int) -> ScoredBatch:
        """Accepts a :class:`~rationalrewards.rl.RewardBatch`, anything with ``rewards`` (and
        optionally ``valid``, ``scores``, ``base_rewards``, ``critiques``), a dict with those
        keys, or a plain sequence of floats."""
        if isinstance(result, dict):
            get = result.get
        elif hasattr(result, "rewards"):
            def get(k: str, d: Any = None) -> Any:
                return getattr(result, k, d)
        else:
            values = list(result)
            result = {"rewards": values}
            get = result.get
        rewards = [_float(x) for x in list(get("rewards"))]
        if len(rewards) != n:
            raise ValueError(f"reward returned {len(rewards)} values for {n} images")
        valid_in = get("valid")
        valid = [bool(v) for v in valid_in] if valid_in is not None else [not math.isnan(r) for r in rewards]
        valid = [v and not math.isnan(r) for v, r in zip(valid, rewards, strict=True)]
        rewards = [r if v else math.nan for r, v in zip(rewards, valid, strict=True)]
        base_in = get("base_rewards")
        base = [_float(b) for b in base_in] if base_in is not None else list(rewards)
        base = [b if v else math.nan for b, v in zip(base, valid, strict=True)]
        scores = {str(k): [_float(x) for x in col] for k, col in dict(get("scores") or {}).items()}
        critiques = get("critiques")
        kinds: list[str | None]
        if hasattr(result, "failure_kinds") and callable(result.failure_kinds):
            kinds = list(result.failure_kinds())
        elif critiques is not None:
            kinds = [None if ok else (getattr(c, "error_kind", None) or "invalid") for c, ok in zip(critiques, valid, strict=True)]
        else:
            kinds = [None if ok else "invalid" for ok in valid]
        kinds = [None if ok else (k or "invalid") for k, ok in zip(kinds, valid, strict=True)]
        return cls(rewards, valid, base, scores, kinds, list(critiques) if critiques is not None else None)

    @staticmethod
    def concat(parts: Sequence[ScoredBatch]) -> ScoredBatch:
        keys: list[str] = []
        for p in parts:
            keys.extend(k for k in p.scores if k not in keys)
        scores = {k: [x for p in parts for x in p.scores.get(k, [math.nan] * len(p.rewards))] for k in keys}
        has_crit = any(p.critiques is not None for p in parts)
        return ScoredBatch(
            rewards=[x for p in parts for x in p.rewards],
            valid=[x for p in parts for x in p.valid],
            base=[x for p in parts for x in p.base],
            scores=scores,
            failure_kinds=[x for p in parts for x in p.failure_kinds],
            critiques=[c for p in parts for c in (p.critiques or [None] * len(p.rewards))] if has_crit else None,
        )


def _float(x: Any) -> float:
    try:
        return float(x) if x is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


class BrightnessReward:
    """A deterministic test reward: mean luminance in [0, 1], reported as dimension ``brightness``.

    It follows the reward protocol the trainer expects (``async score(images, prompts,
    sources=None, group_ids=None)``), so it stands in for the judge in tests and benchmarks.
    """

    async def score(self, images: Sequence[Any], prompts: Sequence[str], sources: Any = None,
                    group_ids: Sequence[Any] | None = None) -> dict[str, Any]:
        from PIL import ImageStat

        values = [ImageStat.Stat(img.convert("L")).mean[0] / 255.0 for img in images]
        return {"rewards": values, "valid": [True] * len(values), "scores": {"brightness": list(values)}}


class RewardClient:
    """Runs any supported reward object in the background and returns futures.

    Supported: objects with ``submit(images, prompts, sources=, group_ids=)`` returning a
    future (:class:`~rationalrewards.rl.RationalReward`), objects with an ``async score(...)``,
    or plain callables ``fn(images, prompts, sources) -> rewards``.
    """

    def __init__(self, reward: Any) -> None:
        self.reward = reward
        self._loop: BackgroundLoop | None = None
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, images: list[Any], prompts: list[str], sources: list[Any] | None,
               group_ids: list[str]) -> Future[Any]:
        r = self.reward
        if hasattr(r, "submit"):
            return r.submit(images, prompts, sources=sources, group_ids=group_ids)
        score = getattr(r, "score", None)
        if score is not None and inspect.iscoroutinefunction(score):
            if self._loop is None:
                self._loop = BackgroundLoop("nft-reward-loop")
            coro = score(images, prompts, sources=sources, group_ids=group_ids)
            return asyncio.run_coroutine_threadsafe(coro, self._loop.loop)
        fn = score if score is not None else r
        if not callable(fn):
            raise TypeError(f"unsupported reward object {type(r).__name__}: give it submit(), async score() or __call__")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="nft-reward")
        return self._pool.submit(fn, images, prompts, sources)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def build_reward(cfg: NFTConfig) -> Any:
    """The reward object named by the config's ``reward_*`` fields."""
    kind = cfg.reward_kind
    if kind == "brightness":
        return BrightnessReward()
    if kind == "python":
        import importlib

        module, _, name = (cfg.reward_target or "").partition(":")
        try:
            factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"reward_target {cfg.reward_target!r} cannot be imported: {exc}") from None
        return factory(**cfg.reward_kwargs)
    from .reward import RationalReward

    if kind == "server":
        from ..serve.client import RemoteReward

        scorer: Any = RemoteReward(cfg.reward_server_url or "", cfg.reward_token, timeout=cfg.reward_timeout,
                                   max_retries=cfg.reward_max_retries, concurrency=max(1, cfg.reward_concurrency // 4),
                                   aggregation=cfg.reward_weights)
    else:
        from ..backends import SamplingParams
        from ..critique.model import RewardModel

        scorer = RewardModel.from_options(
            base_url=cfg.reward_base_url, model=cfg.reward_model,
            api_key=cfg.reward_api_key or os.environ.get("OPENAI_API_KEY"),
            concurrency=cfg.reward_concurrency, timeout=cfg.reward_timeout, max_retries=cfg.reward_max_retries,
            device=cfg.reward_device, dtype=cfg.reward_dtype,
            aggregation=cfg.reward_weights or "default",
            sampling=SamplingParams(temperature=cfg.reward_temperature, max_tokens=cfg.reward_max_tokens),
        )
    return RationalReward(scorer, failure_policy=cfg.reward_failure_policy, scores_only=cfg.reward_scores_only,
                          aggregation=cfg.reward_aggregation, weights=cfg.reward_weights,
                          concurrency=cfg.reward_concurrency)


# -- logging ------------------------------------------------------------------------------------
class RunLogger:
    """JSONL files in the run folder, TensorBoard when installed, W&B when asked (main process only).

    On resume from step S every JSONL log is cut back to rows with ``step <= S`` and TensorBoard
    purges later events, so a killed-and-restarted run has each step logged once.
    """

    FILES = ("metrics.jsonl", "eval.jsonl", "flags.jsonl", "samples.jsonl")

    def __init__(self, out_dir: Path, cfg: NFTConfig, *, enabled: bool, resume_step: int | None,
                 echo: Callable[[str], None] | None) -> None:
        self.out_dir = out_dir
        self.enabled = enabled
        self.echo = echo
        self.tb: Any = None
        self.wandb: Any = None
        self.notes: list[str] = []
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in self.FILES:
            path = out_dir / name
            if resume_step is None:
                path.unlink(missing_ok=True)
            elif path.exists():
                keep = [line for line in path.read_text(encoding="utf-8").splitlines()
                        if _row_step(line) is not None and _row_step(line) <= resume_step]  # type: ignore[operator]
                atomic_write_text(path, "".join(line + "\n" for line in keep))
        if "tensorboard" in cfg.report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"),
                                        purge_step=(resume_step + 1) if resume_step is not None else None)
            except ImportError:
                self.notes.append("tensorboard is not installed; logging to JSONL only (pip install tensorboard)")
        if "wandb" in cfg.report_to:
            try:
                import wandb

                self.wandb = wandb.init(project=cfg.wandb_project or "rationalrewards-rl", config=cfg.to_dict(),
                                        dir=str(out_dir), resume="allow")
            except ImportError:
                self.notes.append("wandb is not installed; skipping W&B logging (pip install wandb)")
        for note in self.notes:
            self._say(f"note: {note}")

    def _say(self, text: str) -> None:
        if self.echo is not None:
            self.echo(text)

    def log(self, name: str, row: dict[str, Any], *, scalars: bool = True) -> None:
        """Append one row to ``name`` (flushed and fsynced); numeric fields also go to
        TensorBoard / W&B unless ``scalars`` is False."""
        if not self.enabled:
            return
        self.append(name, [row])
        if not scalars:
            return
        step = int(row.get("step", 0))
        prefix = "" if name == "metrics.jsonl" else name.split(".")[0] + "/"
        numeric = {prefix + k: float(v) for k, v in row.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if self.tb is not None:
            for k, v in numeric.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(numeric, step=step)

    def append(self, name: str, rows: Sequence[dict[str, Any]]) -> None:
        """Append rows to a JSONL log with one write and one fsync."""
        if not self.enabled or not rows:
            return
        with (self.out_dir / name).open("a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in rows))
            fh.flush()
            os.fsync(fh.fileno())

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def _row_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, set):
        return sorted(obj)
    return str(obj)


def _seed(*parts: Any) -> int:
    """A 63-bit seed derived from the parts (stable across runs, processes and machines)."""
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _mean(values: Sequence[float]) -> float:
    good = [v for v in values if not math.isnan(v)]
    return statistics.fmean(good) if good else math.nan


# -- the trainer ----------------------------------------------------------------------------------
@dataclass
class TrainState:
    """Everything besides tensors that a resume needs."""

    step: int = 0
    epoch: int = 0
    cursor: int = 0
    retired: set[str] = field(default_factory=set)
    failed_streak: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "cursor": self.cursor, "retired": sorted(self.retired),
                "failed_streak": self.failed_streak}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainState:
        return cls(int(d["step"]), int(d["epoch"]), int(d["cursor"]), set(d.get("retired", [])),
                   int(d.get("failed_streak", 0)))


class NFTTrainer:
    """DiffusionNFT with LoRA on a diffusers flow-matching pipeline.

    Args:
        config: an :class:`NFTConfig`.
        reward: a reward object (default: built from the config's ``reward_*`` fields).
        pipeline: an already loaded diffusers pipeline (default: loaded from ``pretrained_model``).
        accelerator: an ``accelerate.Accelerator`` (default: one made from the config).
        verbose: print one line per iteration (and notes) to stderr on the main process.
    """

    def __init__(self, config: NFTConfig, *, reward: Any = None, pipeline: Any = None, accelerator: Any = None,
                 verbose: bool = True) -> None:
        import torch

        cfg = config
        if pipeline is None and not cfg.pretrained_model:
            raise ConfigError("config field 'pretrained_model' is required")
        for name in ("train_data", "output_dir"):
            if not getattr(cfg, name):
                raise ConfigError(f"config field {name!r} is required")
        if reward is None:
            cfg.check_required()
        self.cfg = cfg
        self.verbose = verbose
        dtype = self._resolve_dtype()
        self.accelerator = accelerator or self._make_accelerator(dtype)
        acc = self.accelerator
        self.device = acc.device
        self.rank, self.world = acc.process_index, acc.num_processes
        if cfg.groups_per_step % self.world:
            raise ConfigError(f"groups_per_step ({cfg.groups_per_step}) must be a multiple of the number of "
                              f"processes ({self.world})")
        self.out_dir = Path(cfg.output_dir)

        if pipeline is None:
            pipeline = self._load_pipeline(dtype)
        self.pipe = pipeline
        self.pipe.to(self.device)
        if hasattr(self.pipe, "set_progress_bar_config"):
            self.pipe.set_progress_bar_config(disable=True)
        for module_name in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
            module = getattr(self.pipe, module_name, None)
            if module is not None:
                module.requires_grad_(False)
        self.family = nft.family_for(
            self.pipe, cfg.pipeline_family, height=cfg.image_height, width=cfg.image_width,
            max_sequence_length=cfg.max_sequence_length, guidance_scale=cfg.guidance_scale,
            device=self.device, dtype=self.pipe.transformer.dtype,
        )
        self.task = self.family.task if cfg.task == "auto" else cfg.task
        if self.task != self.family.task:
            raise ConfigError(f"task {cfg.task!r} does not match the {self.family.name} pipeline, which does "
                              f"{self.family.task}")

        transformer = self.pipe.transformer
        # LoRA A matrices are drawn from the global generator: seed it so runs are repeatable.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            params = nft.add_lora_adapters(transformer, rank=cfg.lora_rank, alpha=cfg.lora_alpha,
                                           target_modules=cfg.lora_target_modules, dropout=cfg.lora_dropout)
        if cfg.gradient_checkpointing and hasattr(transformer, "enable_gradient_checkpointing"):
            transformer.enable_gradient_checkpointing()
        transformer.train()
        self.params = params
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                      eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay)
        self.model, self.optimizer = acc.prepare(transformer, optimizer)
        self.transformer = transformer
        self.policy = nft.adapter_params(transformer, nft.POLICY)
        self.old = nft.adapter_params(transformer, nft.OLD)
        self.ema = nft.snapshot(self.policy) if cfg.ema_decay > 0 else None

        self.rows, skipped = load_prompt_rows(cfg.train_data, task=self.task, prompt_key=cfg.prompt_key,
                                              source_key=cfg.source_key)
        self.eval_rows: list[PromptRow] = []
        eval_skipped: list[dict[str, Any]] = []
        if cfg.eval_data:
            self.eval_rows, eval_skipped = load_prompt_rows(cfg.eval_data, task=self.task, prompt_key=cfg.prompt_key,
                                                            source_key=cfg.source_key)
            if cfg.eval_max_prompts:
                self.eval_rows = self.eval_rows[: cfg.eval_max_prompts]
        self.skipped = {"train": skipped, "eval": eval_skipped}

        self.reward = reward if reward is not None else build_reward(cfg)
        self.client = RewardClient(self.reward)
        self.monitor = RewardHackingMonitor(window=cfg.monitor_window, min_change=cfg.monitor_min_change,
                                            severe_score=cfg.monitor_severe_score, keywords=cfg.monitor_keywords)
        self.state = TrainState()
        self.logger: RunLogger | None = None
        self.last_metrics: dict[str, Any] = {}
        self.last_eval: dict[str, Any] | None = None
        self._sigmas = self.family.sampling_sigmas(cfg.num_inference_steps)

    # -- setup helpers --------------------------------------------------------------------------
    def _resolve_dtype(self) -> Any:
        import torch

        name = self.cfg.dtype
        if name == "auto":
            return torch.bfloat16 if torch.cuda.is_available() else torch.float32
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]

    def _make_accelerator(self, dtype: Any) -> Any:
        import torch
        from accelerate import Accelerator

        mp = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "no")
        if not torch.cuda.is_available():
            mp = "no"
        return Accelerator(mixed_precision=mp)

    def _load_pipeline(self, dtype: Any) -> Any:
        from diffusers import DiffusionPipeline

        kwargs: dict[str, Any] = {"torch_dtype": dtype}
        if self.cfg.revision:
            kwargs["revision"] = self.cfg.revision
        try:
            with warnings.catch_warnings():
                # Newer diffusers prefer dtype= but older ones only know torch_dtype=.
                warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
                return DiffusionPipeline.from_pretrained(self.cfg.pretrained_model, **kwargs)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load pipeline {self.cfg.pretrained_model!r}: {exc}") from None

    def _say(self, text: str) -> None:
        if self.verbose and self.accelerator.is_main_process:
            print(text, file=sys.stderr, flush=True)

    # -- data order -----------------------------------------------------------------------------
    def _permutation(self, epoch: int) -> list[int]:
        rng = random.Random(_seed(self.cfg.seed, "data", epoch))
        order = list(range(len(self.rows)))
        rng.shuffle(order)
        return order

    def active_rows(self) -> int:
        return sum(1 for r in self.rows if r.key not in self.state.retired)

    def _next_rows(self) -> list[PromptRow] | None:
        """The next ``groups_per_step`` rows in the seeded epoch order, skipping retired groups."""
        if self.active_rows() == 0:
            return None
        st = self.state
        out: list[PromptRow] = []
        order = self._permutation(st.epoch)
        while len(out) < self.cfg.groups_per_step:
            if st.cursor >= len(order):
                st.epoch += 1
                st.cursor = 0
                order = self._permutation(st.epoch)
                continue
            row = self.rows[order[st.cursor]]
            st.cursor += 1
            if row.key not in st.retired:
                out.append(row)
        return out

    # -- generation -----------------------------------------------------------------------------
    def _encode(self, rows: Sequence[PromptRow]) -> tuple[nft.Cond, list[Any] | None]:
        cond = self.family.encode_prompts([r.prompt for r in rows])
        sources = None
        if self.task == "edit":
            sources = [_open_source(r.source) for r in rows]  # type: ignore[arg-type]
            cond = cond.merge(self.family.encode_sources(sources))
        return cond, sources

    def _velocity_fn(self, cond: nft.Cond) -> Callable[[Any, Any], Any]:
        def velocity(x: Any, sigma: Any) -> Any:
            with self.accelerator.autocast():
                return self.family.velocity(self.transformer, x.to(self.device), sigma.to(self.device), cond)

        return velocity

    def _generate(
        self,
        rows: Sequence[PromptRow],
        per_row: int,
        noise: Any,
        adapter: str,
        *,
        tag: str,
    ) -> tuple[Any, nft.Cond, Any, list[Any], list[ScoredBatch], dict[str, float]]:
        """Sample ``per_row`` images per row from ``noise`` with ``adapter``, scoring finished
        groups in the background. Returns (x0, group cond, sample->group index, images, scored
        parts, timings)."""
        import torch

        cfg = self.cfg
        t0 = time.perf_counter()
        cond, sources = self._encode(rows)
        sample_group = torch.arange(len(rows)).repeat_interleave(per_row)
        n = len(rows) * per_row
        prompts = [rows[int(g)].prompt for g in sample_group]
        keys = [rows[int(g)].key for g in sample_group]
        srcs = [sources[int(g)] for g in sample_group] if sources is not None else None
        x0_parts: list[Any] = []
        images: list[Any] = []
        futures: list[Future[Any]] = []
        spans: list[tuple[int, int]] = []
        done_groups = 0
        nft.activate(self.transformer, adapter)
        try:
            with torch.no_grad():
                for idx in nft.chunks(range(n), cfg.sample_batch_size):
                    sel = torch.tensor(idx)
                    x = noise.index_select(0, sel).to(self.device)
                    velocity = self._velocity_fn(cond.take(sample_group.index_select(0, sel)))
                    x0 = nft.ode_sample(velocity, x, self._sigmas, sampler=cfg.sampler)
                    x0_parts.append(x0)
                    images.extend(self.family.decode(x0))
                    complete = len(images) // per_row
                    if complete > done_groups:
                        a, b = done_groups * per_row, complete * per_row
                        futures.append(self.client.submit(
                            images[a:b], prompts[a:b], srcs[a:b] if srcs is not None else None, keys[a:b]))
                        spans.append((a, b))
                        done_groups = complete
        finally:
            nft.activate(self.transformer, nft.POLICY)
        t1 = time.perf_counter()
        parts = []
        for (a, b), fut in zip(spans, futures, strict=True):
            try:
                parts.append(ScoredBatch.from_result(fut.result(), b - a))
            except Exception as exc:
                # One failed reward call masks its samples, it does not kill the run; the
                # consecutive-failure guard stops a run whose judge is gone.
                self._say(f"warning: {tag} reward call failed for samples {a}-{b}: {type(exc).__name__}: {exc}")
                parts.append(ScoredBatch([math.nan] * (b - a), [False] * (b - a), [math.nan] * (b - a), {},
                                         ["reward-error"] * (b - a)))
        t2 = time.perf_counter()
        x0_all = torch.cat(x0_parts)
        return x0_all, cond, sample_group, images, parts, {"sample_s": t1 - t0, "reward_wait_s": t2 - t1}

    # -- one iteration --------------------------------------------------------------------------
    def step(self) -> dict[str, Any] | None:
        """Run one DiffusionNFT iteration; returns its metrics (None when every group is retired)."""
        import torch
        from accelerate.utils import gather_object

        cfg = self.cfg
        st = self.state
        t_start = time.perf_counter()
        rows = self._next_rows()
        if rows is None:
            return None
        local = rows[self.rank :: self.world]
        k = cfg.group_size
        gen = torch.Generator().manual_seed(_seed(cfg.seed, "sample", st.step, self.rank))
        noise = self.family.noise(len(local) * k, gen)
        x0, cond, sample_group, _, parts, timing = self._generate(local, k, noise, nft.OLD, tag="train")
        scored = ScoredBatch.concat(parts)
        keys = [local[int(g)].key for g in sample_group]

        # Statistics over every process: groups never straddle processes, the global std does.
        all_rewards = gather_object(scored.rewards) if self.world > 1 else scored.rewards
        all_keys = gather_object(keys) if self.world > 1 else keys
        all_base = gather_object(scored.base) if self.world > 1 else scored.base
        adv = nft.group_advantages(all_rewards, all_keys, std=cfg.adv_std, clip=cfg.adv_clip_max, eps=cfg.adv_eps)
        r_all = nft.optimality(adv, cfg.adv_clip_max)
        offset = self.rank * len(scored.rewards)
        r_local = r_all[offset : offset + len(scored.rewards)]

        n_valid_all = sum(1 for r in all_rewards if not math.isnan(r))
        t_train = time.perf_counter()
        if n_valid_all == 0:
            st.failed_streak += 1
            train_stats = {"loss": math.nan, "policy_loss": math.nan, "kl": math.nan, "loss_pos": math.nan,
                           "loss_neg": math.nan, "grad_norm": math.nan, "optimizer_steps": 0}
        else:
            st.failed_streak = 0
            train_stats = self._train_on(x0, cond, sample_group, r_local)
            if self.world > 1:  # log the mean over processes, not rank 0's share
                every = gather_object([train_stats])
                train_stats = {k: (_mean([float(s[k]) for s in every]) if k != "optimizer_steps" else v)
                               for k, v in train_stats.items()}
        t_after = time.perf_counter()

        # The old (sampling) policy trails the trained one; the EMA is for evaluation/export.
        decay = cfg.old_decay(st.step)
        nft.lerp_into(self.old, self.policy, decay)
        if self.ema is not None:
            nft.lerp_into(self.ema, self.policy, cfg.ema_decay)

        newly_retired: list[str] = []
        if cfg.retire_groups:
            for key in nft.solved_groups(all_base, all_keys, max_std=cfg.retire_std, min_mean=cfg.retire_mean):
                if key not in st.retired:
                    st.retired.add(key)
                    newly_retired.append(str(key))

        st.step += 1
        metrics = self._step_metrics(scored, all_rewards, all_base, all_keys, adv, r_all, train_stats,
                                     decay, newly_retired, timing, t_after - t_train, time.perf_counter() - t_start)
        self._monitor(metrics, scored, local, sample_group)
        if cfg.log_samples:
            rows_out = []
            for i in range(len(scored.rewards)):
                row = local[int(sample_group[i])]
                rows_out.append({
                    "step": st.step, "id": row.id, "prompt": row.prompt, "group": row.key,
                    "reward": scored.rewards[i], "valid": scored.valid[i], "failure": scored.failure_kinds[i],
                    "advantage": adv[offset + i], "r": r_local[i],
                    "scores": {d: col[i] for d, col in scored.scores.items()},
                })
            gathered = gather_object(rows_out) if self.world > 1 else rows_out
            if self.logger is not None:
                self.logger.append("samples.jsonl", gathered)
        self.last_metrics = metrics
        if st.failed_streak >= cfg.max_failed_steps:
            raise RewardUnavailableError(
                f"no valid reward in {st.failed_streak} consecutive iterations (last failures: "
                f"{_count(scored.failure_kinds)}); is the judge reachable? ({self.reward_description()})")
        return metrics

    def _train_on(self, x0: Any, cond: nft.Cond, sample_group: Any, r_local: list[float]) -> dict[str, Any]:
        """DiffusionNFT updates on this iteration's samples."""
        import torch

        cfg = self.cfg
        st = self.state
        n = x0.shape[0]
        gen = torch.Generator().manual_seed(_seed(cfg.seed, "train", st.step, self.rank))
        r_tensor = torch.tensor(r_local, dtype=torch.float32)
        micro: list[Any] = []
        for _ in range(cfg.inner_epochs):
            perm = torch.randperm(n, generator=gen)
            for batch in nft.chunks(perm.tolist(), cfg.train_batch_size):
                micro.extend([torch.tensor(batch)] * cfg.timesteps_per_sample)
        n_opt = min(cfg.gradient_steps_per_step * cfg.inner_epochs, len(micro))
        bounds = [round(i * len(micro) / n_opt) for i in range(n_opt + 1)]
        losses, kls, poss, negs, norms = [], [], [], [], []
        for part in range(n_opt):
            steps = micro[bounds[part] : bounds[part + 1]]
            for j, idx in enumerate(steps):
                last = j == len(steps) - 1
                out = self._micro_step(x0, cond, sample_group, r_tensor, idx, gen, scale=1.0 / len(steps), sync=last)
                if out.n_used:
                    losses.append(out.policy_loss + cfg.kl_coef * out.kl)
                    kls.append(out.kl)
                    poss.append(out.positive)
                    negs.append(out.negative)
            norms.append(self._optimizer_step())
        return {"loss": _mean(losses), "policy_loss": _mean([a - cfg.kl_coef * b for a, b in zip(losses, kls, strict=True)]),
                "kl": _mean(kls), "loss_pos": _mean(poss), "loss_neg": _mean(negs), "grad_norm": _mean(norms),
                "optimizer_steps": n_opt}

    def _micro_step(self, x0: Any, cond: nft.Cond, sample_group: Any, r_tensor: Any, idx: Any, gen: Any, *,
                    scale: float, sync: bool) -> nft.NFTLoss:
        import contextlib

        import torch

        cfg = self.cfg
        b = len(idx)
        x0_b = x0.index_select(0, idx.to(x0.device)).float()
        eps = torch.randn(x0_b.shape, generator=gen, dtype=torch.float32).to(self.device)
        sigma = nft.sample_train_sigmas(b, gen, t_min=cfg.timestep_min, t_max=cfg.timestep_max,
                                        sampling=cfg.timestep_sampling,
                                        shift=self.family.shift if cfg.timestep_shift else None).to(self.device)
        s = sigma.reshape(b, *([1] * (x0_b.dim() - 1)))
        x_t = (1.0 - s) * x0_b + s * eps
        c = cond.take(sample_group.index_select(0, idx))
        r_b = r_tensor.index_select(0, idx).to(self.device)
        with torch.no_grad():
            nft.activate(self.transformer, nft.OLD)
            try:
                with self.accelerator.autocast():
                    v_old = self.family.velocity(self.transformer, x_t, sigma, c).float()
            finally:
                nft.activate(self.transformer, nft.POLICY)
            v_ref = None
            if cfg.kl_coef > 0:
                self.transformer.disable_adapters()
                try:
                    with self.accelerator.autocast():
                        v_ref = self.family.velocity(self.transformer, x_t, sigma, c).float()
                finally:
                    self.transformer.enable_adapters()
                    nft.activate(self.transformer, nft.POLICY)
        ctx = contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model)
        with ctx:
            with self.accelerator.autocast():
                v = self.family.velocity(self.model, x_t, sigma, c)
            out = nft.nft_loss(v, v_old, x0_b, eps, sigma, r_b, beta=cfg.nft_beta, weighting=cfg.loss_weighting,
                               v_ref=v_ref, kl_coef=cfg.kl_coef)
            self.accelerator.backward(out.loss * scale)
        return out

    def _optimizer_step(self) -> float:
        import torch

        cfg = self.cfg
        if cfg.max_grad_norm is not None:
            norm = self.accelerator.clip_grad_norm_(self.params, cfg.max_grad_norm)
            norm_f = float(norm) if norm is not None else math.nan
        else:
            grads = [p.grad.detach().float().norm() for p in self.params if p.grad is not None]
            norm_f = float(torch.stack(grads).norm()) if grads else 0.0
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm_f

    # -- metrics and monitor --------------------------------------------------------------------
    def _step_metrics(self, scored: ScoredBatch, all_rewards: list[float], all_base: list[float],
                      all_keys: list[str], adv: list[float], r_all: list[float], train_stats: dict[str, Any],
                      decay: float, newly_retired: list[str], timing: dict[str, float], train_s: float,
                      step_s: float) -> dict[str, Any]:
        from accelerate.utils import gather_object

        kinds = gather_object(scored.failure_kinds) if self.world > 1 else scored.failure_kinds
        dims: dict[str, float] = {}
        for key in sorted(scored.scores):
            col = gather_object(scored.scores[key]) if self.world > 1 else scored.scores[key]
            dims[key] = _mean(col)
        n = len(all_rewards)
        good = [b for b in all_base if not math.isnan(b)]
        counts = _count(kinds)
        groups: dict[str, list[float]] = {}
        for r, key in zip(all_rewards, all_keys, strict=True):
            if not math.isnan(r):
                groups.setdefault(key, []).append(r)
        flat = sum(1 for g in groups.values() if len(g) < 2 or max(g) == min(g))
        metrics: dict[str, Any] = {
            "step": self.state.step,
            "epoch": self.state.epoch,
            **train_stats,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "old_decay": decay,
            "reward_mean": _mean(good),
            "reward_std": statistics.pstdev(good) if len(good) > 1 else math.nan,
            "reward_min": min(good) if good else math.nan,
            "reward_max": max(good) if good else math.nan,
            **{f"score/{k}": v for k, v in dims.items()},
            "n_samples": n,
            "n_valid": len(good),
            "n_masked": n - len(good),
            "failure_rate": (n - len(good)) / n if n else 0.0,
            "parse_failure_rate": counts.get("parse", 0) / n if n else 0.0,
            **{f"failures/{k}": v for k, v in sorted(counts.items())},
            "adv_abs_mean": _mean([abs(a) for a in adv]),
            "r_mean": _mean(r_all),
            "groups": len(set(all_keys)),
            "groups_without_signal": flat,
            "retired_new": len(newly_retired),
            "retired_total": len(self.state.retired),
            "active_prompts": self.active_rows(),
            "time/sample_s": timing["sample_s"],
            "time/reward_wait_s": timing["reward_wait_s"],
            "time/train_s": train_s,
            "time/step_s": step_s,
        }
        if newly_retired:
            metrics["retired_keys"] = newly_retired
        return metrics

    def _monitor(self, metrics: dict[str, Any], scored: ScoredBatch, local: Sequence[PromptRow], sample_group: Any) -> None:
        from accelerate.utils import gather_object

        step = self.state.step
        dims = {k[len("score/"):]: v for k, v in metrics.items() if k.startswith("score/")}
        flags = self.monitor.observe(step, metrics["reward_mean"], dims)
        just_flags: list[Any] = []
        total = 0
        if scored.critiques is not None:
            prompts = [local[int(g)].prompt for g in sample_group]
            ids = [local[int(g)].id for g in sample_group]
            just_flags, total = self.monitor.check_critiques(step, scored.critiques, prompts, ids)
        if self.world > 1:
            total = sum(gather_object([total]))
            just_flags = gather_object(just_flags)
        metrics["monitor/trend_flags"] = len(flags)
        metrics["monitor/justification_flags"] = total
        metrics["monitor/justification_rate"] = total / max(1, metrics["n_valid"])
        if self.logger is not None:
            self.logger.append("flags.jsonl", [f.to_json() for f in [*flags, *just_flags]])
        for flag in flags:
            self._say(f"monitor: step {step}: {flag.message}")

    def reward_description(self) -> str:
        describe = getattr(self.reward, "describe", None)
        if callable(describe):
            try:
                return json.dumps(describe(), default=str)
            except Exception:  # a description is best effort, never a failure
                pass
        return type(self.reward).__name__

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self) -> dict[str, Any] | None:
        """Sample the held-out prompts (fixed noise, EMA weights when enabled) and score them."""
        import torch
        from accelerate.utils import gather_object

        cfg = self.cfg
        if not self.eval_rows:
            return None
        per = cfg.eval_images_per_prompt
        order = list(range(len(self.eval_rows)))[self.rank :: self.world]
        local = [self.eval_rows[i] for i in order]
        noise = torch.cat([
            self.family.noise(1, torch.Generator().manual_seed(_seed(cfg.eval_seed, i, j)))
            for i in order for j in range(per)
        ]) if local else None
        saved = None
        if self.ema is not None and cfg.eval_use_ema:
            saved = nft.snapshot(self.policy)
            nft.copy_into(self.policy, self.ema)
        try:
            if local:
                _, _, sample_group, images, parts, _ = self._generate(local, per, noise, nft.POLICY, tag="eval")
                scored = ScoredBatch.concat(parts)
            else:
                images, scored, sample_group = [], ScoredBatch([], [], [], {}, []), torch.zeros(0)
        finally:
            if saved is not None:
                nft.copy_into(self.policy, saved)
        step = self.state.step
        records = []
        eval_dir = self.out_dir / "eval" / f"{CHECKPOINT_PREFIX}{step:06d}"
        for i, img in enumerate(images):
            row = local[int(sample_group[i])]
            name = f"{_safe_name(row.id)}_{i % per}.png"
            if cfg.save_eval_images:
                eval_dir.mkdir(parents=True, exist_ok=True)
                img.save(eval_dir / name)
            records.append({"step": step, "id": row.id, "prompt": row.prompt, "image": name if cfg.save_eval_images else None,
                            # The [0, 1] reward: a group-normalised (gdpo) value means nothing for one image.
                            "reward": scored.base[i], "valid": scored.valid[i], "failure": scored.failure_kinds[i],
                            "scores": {d: col[i] for d, col in scored.scores.items()}})
        parts_all = gather_object(records) if self.world > 1 else records
        n = len(parts_all)
        rewards = [r["reward"] for r in parts_all]
        dims = sorted({d for r in parts_all for d in r["scores"]})
        counts = _count([r["failure"] for r in parts_all])
        result: dict[str, Any] = {
            "step": step,
            "reward_mean": _mean(rewards),
            **{f"score/{d}": _mean([_float(r["scores"].get(d)) for r in parts_all]) for d in dims},
            "n": n,
            "failure_rate": sum(1 for r in parts_all if not r["valid"]) / n if n else 0.0,
            "parse_failure_rate": counts.get("parse", 0) / n if n else 0.0,
            "weights": "ema" if saved is not None else "current",
        }
        if self.accelerator.is_main_process and self.logger is not None:
            self.logger.log("eval.jsonl", result)
            eval_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(eval_dir / "results.jsonl",
                              "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in parts_all))
        self.last_eval = result
        self._say(f"eval step {step}: reward {result['reward_mean']:.4f} over {n} images "
                  f"(failures {result['failure_rate']:.1%})")
        return result

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step-NNNNNN`` atomically (adapters, EMA, optimiser, RNG, data state)
        and point ``checkpoints/latest`` at it. Every process saves its RNG state; the main
        process writes the rest."""
        from safetensors.torch import save_file

        acc = self.accelerator
        root = self.checkpoint_dir()
        name = f"{CHECKPOINT_PREFIX}{self.state.step:06d}"
        final = root / name
        tmp = root / f".{name}.tmp"
        acc.wait_for_everyone()
        if acc.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        safe_state.save_rng_state(tmp, self.rank)
        if acc.is_main_process:
            tensors = {f"policy/{k}": v.detach().float().contiguous().cpu() for k, v in self.policy.items()}
            tensors.update({f"old/{k}": v.detach().float().contiguous().cpu() for k, v in self.old.items()})
            if self.ema is not None:
                tensors.update({f"ema/{k}": v.contiguous().cpu() for k, v in self.ema.items()})
            save_file(tensors, str(tmp / "adapters.safetensors"))
            safe_state.save_optimizer_state(self.optimizer, tmp)
            atomic_write_json(tmp / "state.json", {
                **self.state.to_json(),
                "monitor": self.monitor.state_dict(),
                "fingerprint": self.cfg.fingerprint(),
                "world_size": self.world,
                "last_eval": self.last_eval,
            })
        acc.wait_for_everyone()
        if acc.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            atomic_write_text(root / "latest", name + "\n")
            self._prune_checkpoints()
        acc.wait_for_everyone()
        return final

    def _prune_checkpoints(self) -> None:
        limit = self.cfg.save_total_limit
        if not limit:
            return
        found = sorted(p for p in self.checkpoint_dir().glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir())
        for old in found[:-limit]:
            shutil.rmtree(old, ignore_errors=True)

    def find_checkpoint(self) -> Path | None:
        """The checkpoint ``resume`` points at (auto: the latest complete one in output_dir)."""
        mode = self.cfg.resume
        if mode == "never":
            return None
        if mode != "auto":
            path = Path(mode)
            if not (path / "state.json").is_file():
                raise ConfigError(f"resume: {path} is not a checkpoint folder (no state.json)")
            return path
        latest = self.checkpoint_dir() / "latest"
        if latest.is_file():
            path = self.checkpoint_dir() / latest.read_text(encoding="utf-8").strip()
            if (path / "state.json").is_file():
                return path
        found = sorted(p for p in self.checkpoint_dir().glob(f"{CHECKPOINT_PREFIX}*")
                       if (p / "state.json").is_file()) if self.checkpoint_dir().is_dir() else []
        return found[-1] if found else None

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything :meth:`save_checkpoint` wrote; the next iteration is then identical
        to the one the original run would have taken."""
        path = Path(path)
        meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
        mismatched = {k: (v, meta.get("fingerprint", {}).get(k)) for k, v in self.cfg.fingerprint().items()
                      if k in meta.get("fingerprint", {}) and meta["fingerprint"][k] != v}
        if mismatched:
            details = ", ".join(f"{k}: checkpoint {b!r} vs config {a!r}" for k, (a, b) in mismatched.items())
            raise ConfigError(f"checkpoint {path} was made with a different configuration ({details})")
        tensors = safe_state.load_tensors(path / "adapters.safetensors")
        nft.copy_into(self.policy, {k[len("policy/"):]: v for k, v in tensors.items() if k.startswith("policy/")})
        nft.copy_into(self.old, {k[len("old/"):]: v for k, v in tensors.items() if k.startswith("old/")})
        ema = {k[len("ema/"):]: v for k, v in tensors.items() if k.startswith("ema/")}
        if self.ema is not None:
            if ema:
                nft.copy_into(self.ema, ema)
            else:
                self.ema = nft.snapshot(self.policy)
        # Nothing in a run folder is unpickled: it may come from elsewhere (safe_state explains).
        safe_state.load_optimizer_state(self.optimizer, path)
        self.state = TrainState.from_json(meta)
        self.monitor.load_state_dict(meta.get("monitor", {}))
        self.last_eval = meta.get("last_eval")
        if safe_state.has_rng_state(path, self.rank):
            safe_state.load_rng_state(path, self.rank)

    # -- export ---------------------------------------------------------------------------------
    def export_lora(self, out: str | Path, *, weights: str = "policy") -> Path:
        """Save the trained adapter (``policy``) or its EMA (``ema``) in diffusers' LoRA format,
        loadable with ``pipe.load_lora_weights(out)``."""
        from peft.utils import get_peft_model_state_dict

        out = Path(out)
        saved = None
        if weights == "ema":
            if self.ema is None:
                raise ValueError("no EMA weights (ema_decay is 0)")
            saved = nft.snapshot(self.policy)
            nft.copy_into(self.policy, self.ema)
        try:
            state = get_peft_model_state_dict(self.transformer, adapter_name=nft.POLICY)
            state = {k: v.detach().float().contiguous().cpu() for k, v in state.items()}
            saver = getattr(type(self.pipe), "save_lora_weights", None)
            out.mkdir(parents=True, exist_ok=True)
            if saver is not None:
                saver(str(out), transformer_lora_layers=state)
            else:  # pragma: no cover - every supported family has a LoRA loader
                from safetensors.torch import save_file

                save_file(state, str(out / "pytorch_lora_weights.safetensors"))
        finally:
            if saved is not None:
                nft.copy_into(self.policy, saved)
        return out

    # -- the loop -------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Train until ``max_steps`` (resuming first if configured); returns a summary that is
        also written to ``output_dir/summary.json``."""
        cfg = self.cfg
        acc = self.accelerator
        ckpt = self.find_checkpoint()
        if ckpt is not None:
            self.load_checkpoint(ckpt)
            self._say(f"resumed from {ckpt} at step {self.state.step}")
        resume_step = self.state.step if ckpt is not None else None
        self.logger = RunLogger(self.out_dir, cfg, enabled=acc.is_main_process, resume_step=resume_step,
                                echo=self._say if self.verbose else None)
        if acc.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out_dir / "config.yaml", cfg.to_yaml())
            skipped = [{"split": s, **row} for s, rows in self.skipped.items() for row in rows]
            if skipped:
                atomic_write_text(self.out_dir / "skipped_rows.jsonl",
                                  "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in skipped))
                self._say(f"warning: skipped {len(skipped)} unusable prompt rows (see skipped_rows.jsonl)")
        stop_reason = "max_steps"
        t0 = time.perf_counter()
        try:
            if cfg.eval_every and self.state.step == 0 and ckpt is None:
                self.evaluate()
            saved_at = self.state.step if ckpt is not None else None
            while self.state.step < cfg.max_steps:
                metrics = self.step()
                if metrics is None:
                    stop_reason = "all prompt groups retired"
                    self._say("stopping: every prompt group is retired (solved)")
                    break
                self.logger.log("metrics.jsonl", metrics)
                self._say(_progress_line(metrics))
                step = self.state.step
                if cfg.eval_every and step % cfg.eval_every == 0:
                    self.evaluate()
                if cfg.save_every and step % cfg.save_every == 0:
                    self.save_checkpoint()
                    saved_at = step
            if saved_at != self.state.step:
                self.save_checkpoint()
            final_dir = self.out_dir / "final"
            if acc.is_main_process:
                self.export_lora(final_dir / "lora")
                if self.ema is not None:
                    self.export_lora(final_dir / "lora_ema", weights="ema")
            summary = {
                "ok": True,
                "stop_reason": stop_reason,
                "steps": self.state.step,
                "epoch": self.state.epoch,
                "retired": len(self.state.retired),
                "active_prompts": self.active_rows(),
                "skipped_rows": sum(len(v) for v in self.skipped.values()),
                "last": {k: v for k, v in self.last_metrics.items() if not isinstance(v, list)},
                "last_eval": self.last_eval,
                "wall_s": time.perf_counter() - t0,
                "output_dir": str(self.out_dir),
                "lora": str(final_dir / "lora"),
                "pipeline_family": self.family.name,
                "task": self.task,
                "notes": list(self.logger.notes),
            }
            if acc.is_main_process:
                atomic_write_json(self.out_dir / "summary.json", _finite_json(summary))
            return summary
        finally:
            self.logger.close()

    def close(self) -> None:
        """Stop background reward threads and close the reward object if it can be closed."""
        self.client.close()
        for obj in (self.reward, getattr(self.reward, "scorer", None)):
            close = getattr(obj, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as exc:  # closing must not hide the run's own result
                    self._say(f"warning: closing the reward failed: {exc}")

    def __enter__(self) -> NFTTrainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _count(kinds: Sequence[str | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in kinds:
        if k is not None:
            out[k] = out.get(k, 0) + 1
    return out


def _safe_name(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    return keep[:80] or "item"


def _finite_json(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    return obj


def _progress_line(m: dict[str, Any]) -> str:
    return (f"step {m['step']}: loss {m['loss']:.4f} reward {m['reward_mean']:.4f} (valid {m['n_valid']}/"
            f"{m['n_samples']}) retired {m['retired_total']} | sample {m['time/sample_s']:.2f}s "
            f"wait {m['time/reward_wait_s']:.2f}s train {m['time/train_s']:.2f}s")
