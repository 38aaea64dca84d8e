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

import hashlib
import json
import math
import os
import random
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write_json, atomic_write_text
from . import nft
from .checkpoint import CHECKPOINT_PREFIX, CheckpointMixin, TrainState
from .config import ConfigError, NFTConfig
from .data import PromptRow, load_prompt_rows
from .monitor import RewardHackingMonitor
from .rewarding import (
    BrightnessReward,
    RewardClient,
    RewardUnavailableError,
    ScoredBatch,
    _float,
    build_reward,
)
from .run_log import RunLogger
from .sampling import GroupSampler

__all__ = ["BrightnessReward", "NFTTrainer", "RewardUnavailableError", "TrainState"]


def _seed(*parts: Any) -> int:
    """A 63-bit seed derived from the parts (stable across runs, processes and machines)."""
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _mean(values: Sequence[float]) -> float:
    good = [v for v in values if not math.isnan(v)]
    return statistics.fmean(good) if good else math.nan



class NFTTrainer(CheckpointMixin):
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
                                           target_modules=self.lora_targets(), dropout=cfg.lora_dropout)
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
                                              source_key=cfg.source_key, max_sources=self.family.max_sources)
        self.eval_rows: list[PromptRow] = []
        eval_skipped: list[dict[str, Any]] = []
        if cfg.eval_data:
            self.eval_rows, eval_skipped = load_prompt_rows(cfg.eval_data, task=self.task, prompt_key=cfg.prompt_key,
                                                            source_key=cfg.source_key, max_sources=self.family.max_sources)
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
        self.sampler = GroupSampler(self.family, self.transformer, acc, self.client, self._sigmas, task=self.task,
                                    batch_size=cfg.sample_batch_size, sampler=cfg.sampler, say=self._say,
                                    model=self.model)

    # -- setup helpers --------------------------------------------------------------------------
    def lora_targets(self) -> list[str]:
        """The config's ``lora_target_modules``, or the family's own when the config keeps the default."""
        from .config import DEFAULT_LORA_TARGETS

        targets = list(self.cfg.lora_target_modules)
        if targets == list(DEFAULT_LORA_TARGETS) and self.family.default_lora_targets is not None:
            return list(self.family.default_lora_targets)
        return targets

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
    def _generate(
        self,
        rows: Sequence[PromptRow],
        per_row: int,
        noise: Any,
        adapter: str,
        *,
        tag: str,
    ) -> tuple[Any, nft.Cond, Any, list[Any], list[ScoredBatch], dict[str, float]]:
        """Sample and score whole groups (see :meth:`GroupSampler.generate`)."""
        return self.sampler.generate(rows, per_row, noise, adapter, tag=tag)

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
                    v_old = self.family.velocity(self.model, x_t, sigma, c).float()
            finally:
                nft.activate(self.transformer, nft.POLICY)
            v_ref = None
            if cfg.kl_coef > 0:
                self.transformer.disable_adapters()
                try:
                    with self.accelerator.autocast():
                        v_ref = self.family.velocity(self.model, x_t, sigma, c).float()
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
        requested = [name for name, var in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
                     if os.environ.get(var, "").lower() == "true"]
        dist = str(getattr(acc.distributed_type, "value", acc.distributed_type))
        if requested and dist.upper() != requested[0].upper():
            # accelerate applies FSDP / DeepSpeed only on accelerators: say so instead of pretending.
            note = (f"{requested[0]} was requested but accelerate runs this process as {dist} (no sharding; "
                    f"accelerate shards only on GPUs and other accelerators)")
            self.logger.notes.append(note)
            self._say(f"note: {note}")
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
                # NO, MULTI_GPU, FSDP, DEEPSPEED...: what ``accelerate launch`` set up.
                "distributed_type": str(getattr(acc.distributed_type, "value", acc.distributed_type)),
                "num_processes": self.world,
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
