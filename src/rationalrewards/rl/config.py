"""One flat configuration dataclass for ``rationalrewards rl train`` (TRL style), loaded from YAML.

    cfg = NFTConfig.from_yaml("examples/rl_flux_t2i.yaml", overrides=["max_steps=10"])

Every field has a default except ``pretrained_model``, ``train_data`` and ``output_dir``. Unknown
keys are refused with the closest known name, so a typo never silently falls back to a default.
Relative paths in a YAML file (``train_data``, ``eval_data``, ``output_dir``, and
``pretrained_model`` when such a folder exists) are resolved against the YAML file's folder.

Only the standard library and PyYAML are imported here: the CLI validates a config without
loading torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def family_choices() -> tuple[str, ...]:
    """``auto`` and every registered pipeline family (:mod:`rationalrewards.rl.families`)."""
    from .families import family_names

    return ("auto", *family_names())


TASKS = ("auto", "t2i", "edit")
SAMPLERS = ("euler", "heun")
ADV_STD = ("global", "group")
WEIGHTINGS = ("adaptive", "velocity")
TIMESTEP_SAMPLING = ("uniform", "logit-normal")
REWARD_KINDS = ("judge", "server", "python", "brightness")
REPORT_TO = ("jsonl", "tensorboard", "wandb")
DTYPES = ("auto", "float32", "bfloat16", "float16")
RESUME_MODES = ("auto", "never")

DEFAULT_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
DEFAULT_SEVERE_KEYWORDS = (
    "severe", "severely", "distorted", "distortion", "missing", "garbled", "illegible", "deformed",
    "unrecognizable", "broken", "completely wrong", "fails to", "major flaw", "major flaws",
)

# Fields that hold paths, resolved against the YAML file's folder.
_PATH_FIELDS = ("train_data", "eval_data", "output_dir")


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the field."""


@dataclass
class NFTConfig:
    """Everything ``rationalrewards rl train`` needs: generator, data, DiffusionNFT, reward, logging.

    Sizes are per iteration ("step"): ``groups_per_step`` prompt groups of ``group_size``
    images each are sampled, scored and trained on, then the old (sampling) policy is updated.
    """

    # -- generator -------------------------------------------------------------------------------
    pretrained_model: str = ""
    """diffusers pipeline folder or hub id (FLUX.1-dev, FLUX.1-Kontext-dev, SD3.5, ...)."""
    pipeline_family: str = "auto"
    """auto | flux | flux-kontext | sd3 | qwen-image | qwen-image-edit (auto: from the pipeline
    class); families registered with ``register_family`` are accepted too."""
    revision: str | None = None
    dtype: str = "auto"
    """Frozen base weights: auto (bfloat16 on GPU, float32 on CPU) | float32 | bfloat16 | float16.
    LoRA weights, optimiser state and the EMA are always float32."""
    gradient_checkpointing: bool = False
    lora_rank: int = 32
    lora_alpha: int = 64
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))

    # -- data ------------------------------------------------------------------------------------
    train_data: str = ""
    """JSONL with ``prompt`` (and ``source`` for edits); paths relative to the JSONL's folder."""
    eval_data: str | None = None
    prompt_key: str = "prompt"
    source_key: str | None = None
    """Column of the source image for edits (default: the first of source, source_image, image_path, image)."""
    task: str = "auto"
    """auto (t2i for text-to-image pipelines, edit for edit pipelines) | t2i | edit."""

    # -- sampling --------------------------------------------------------------------------------
    resolution: int = 512
    height: int | None = None
    width: int | None = None
    num_inference_steps: int = 10
    sampler: str = "heun"
    """Deterministic ODE sampler: heun (2nd order, as DiffusionNFT) | euler."""
    guidance_scale: float = 3.5
    """Embedded guidance for guidance-distilled models (FLUX.1-dev/Kontext); ignored otherwise.
    True classifier-free guidance is never used: DiffusionNFT is CFG-free."""
    max_sequence_length: int = 512
    group_size: int = 8
    """K: images sampled per prompt group."""
    groups_per_step: int = 16
    """Prompt groups per iteration, over all processes."""
    sample_batch_size: int = 8
    """Images per sampling forward pass (per process)."""

    # -- DiffusionNFT ----------------------------------------------------------------------------
    max_steps: int = 300
    learning_rate: float = 3e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 1e-4
    max_grad_norm: float | None = 1.0
    train_batch_size: int = 8
    """Samples per training forward pass (per process)."""
    gradient_steps_per_step: int = 1
    """Optimiser steps per iteration (the iteration's samples are split evenly)."""
    inner_epochs: int = 1
    timesteps_per_sample: int = 2
    """Forward-process times t drawn per sample per inner epoch (each one forward/backward)."""
    timestep_sampling: str = "uniform"
    timestep_min: float = 0.0
    timestep_max: float = 1.0
    timestep_shift: bool = True
    """Warp t with the scheduler's own shift, as the sampler spends its steps."""
    nft_beta: float = 1.0
    """Strength of the implicit policies: v+ = (1-b) v_old + b v, v- = (1+b) v_old - b v."""
    loss_weighting: str = "adaptive"
    """adaptive (x0-space error divided by its own detached mean magnitude) | velocity."""
    adv_std: str = "global"
    """Divide group-centred rewards by the std of all rewards of the iteration (global) or of the group."""
    adv_clip_max: float = 5.0
    adv_eps: float = 1e-4
    kl_coef: float = 0.0
    """Weight of ||v - v_ref||^2 to the frozen base model (an extra forward when > 0)."""
    old_decay_flat_steps: int = 0
    old_decay_rate: float = 0.001
    old_decay_max: float = 0.5
    """Old (sampling) policy after iteration s: old <- d old + (1-d) current with
    d = 0 for s < flat, else min(rate (s - flat), max)."""
    ema_decay: float = 0.9
    """EMA of the trained LoRA weights (for evaluation and export); 0 disables it."""
    retire_groups: bool = True
    retire_std: float = 0.05
    retire_mean: float = 0.9
    """A prompt group whose rewards have std < retire_std and mean > retire_mean is not sampled again."""
    max_failed_steps: int = 3
    """Abort after this many consecutive iterations in which no reward was valid."""
    seed: int = 42

    # -- reward ----------------------------------------------------------------------------------
    reward_kind: str = "judge"
    """judge (RationalRewards model: OpenAI-compatible server or in-process) | server
    (``rationalrewards serve``) | python (reward_target) | brightness (test reward)."""
    reward_base_url: list[str] | None = None
    reward_model: str | None = None
    reward_api_key: str | None = None
    reward_server_url: str | None = None
    reward_token: str | None = None
    reward_target: str | None = None
    """python: ``module:factory``; the factory gets reward_kwargs and returns the reward object."""
    reward_kwargs: dict[str, Any] = field(default_factory=dict)
    reward_failure_policy: str = "mask"
    reward_aggregation: str = "sum"
    """sum | gdpo (see rationalrewards.rl.aggregation)."""
    reward_weights: str | None = None
    reward_scores_only: bool = True
    reward_concurrency: int = 32
    reward_timeout: float = 300.0
    reward_max_retries: int = 3
    reward_temperature: float = 0.1
    reward_max_tokens: int = 2048
    reward_device: str = "auto"
    reward_dtype: str = "auto"

    # -- evaluation, checkpoints, logging ---------------------------------------------------------
    output_dir: str = ""
    eval_every: int = 25
    """Evaluate on eval_data every N iterations (0: never); also before the first iteration."""
    eval_images_per_prompt: int = 1
    eval_max_prompts: int | None = None
    eval_seed: int = 1234
    eval_use_ema: bool = True
    save_eval_images: bool = True
    save_every: int = 25
    save_total_limit: int | None = 3
    resume: str = "auto"
    """auto (latest checkpoint in output_dir, if any) | never | a checkpoint folder."""
    report_to: list[str] = field(default_factory=lambda: ["jsonl", "tensorboard"])
    wandb_project: str | None = None
    log_samples: bool = False
    """Append every sample's prompt, reward, scores and failure reason to samples.jsonl."""
    monitor_window: int = 20
    monitor_min_change: float = 0.02
    monitor_severe_score: float = 3.5
    monitor_keywords: list[str] = field(default_factory=lambda: list(DEFAULT_SEVERE_KEYWORDS))

    # -- construction ----------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, base_dir: str | Path | None = None) -> NFTConfig:
        """Build from a mapping; unknown keys raise :class:`ConfigError` naming the closest field."""
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a mapping of field: value, got {type(data).__name__}")
        names = cls.field_names()
        unknown = [k for k in data if k not in names]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), names, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(f"unknown config field(s): {', '.join(hints)}")
        values = {k: _coerce(k, v) for k, v in data.items()}
        if base_dir is not None:
            values = _resolve_paths(values, Path(base_dir))
        try:
            return cls(**values)
        except TypeError as exc:  # pragma: no cover - from_dict filters names, kept for clarity
            raise ConfigError(str(exc)) from None

    @classmethod
    def from_yaml(cls, path: str | Path, *, overrides: list[str] | dict[str, Any] | None = None) -> NFTConfig:
        """Read a YAML file, apply ``key=value`` overrides (values parsed as YAML), validate."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of field: value at the top level")
        data.update(parse_overrides(overrides))
        return cls.from_dict(data, base_dir=path.resolve().parent)

    def replace(self, **changes: Any) -> NFTConfig:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    # -- derived values --------------------------------------------------------------------------
    @property
    def image_height(self) -> int:
        return int(self.height or self.resolution)

    @property
    def image_width(self) -> int:
        return int(self.width or self.resolution)

    def old_decay(self, step: int) -> float:
        """Decay of the old-policy update after iteration ``step`` (0-based)."""
        if step < self.old_decay_flat_steps:
            return 0.0
        return min(self.old_decay_rate * (step - self.old_decay_flat_steps), self.old_decay_max)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"config field {name!r}: {why} (got {getattr(self, name)!r})")

        choices = {
            "pipeline_family": family_choices(), "task": TASKS, "sampler": SAMPLERS, "adv_std": ADV_STD,
            "loss_weighting": WEIGHTINGS, "timestep_sampling": TIMESTEP_SAMPLING, "reward_kind": REWARD_KINDS,
            "dtype": DTYPES, "reward_aggregation": ("sum", "gdpo"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise bad(name, f"must be one of {', '.join(allowed)}")
        positive_ints = (
            "lora_rank", "lora_alpha", "resolution", "num_inference_steps", "max_sequence_length", "group_size",
            "groups_per_step", "sample_batch_size", "train_batch_size", "gradient_steps_per_step", "inner_epochs",
            "timesteps_per_sample", "eval_images_per_prompt", "reward_concurrency", "reward_max_tokens",
            "monitor_window", "max_failed_steps",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(name, "must be an integer >= 1")
        for name in ("max_steps", "eval_every", "save_every", "old_decay_flat_steps", "seed", "eval_seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad(name, "must be an integer >= 0")
        for name in ("height", "width", "eval_max_prompts", "save_total_limit"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise bad(name, "must be an integer >= 1 or null")
        for name in ("learning_rate", "nft_beta", "adv_clip_max", "adv_eps", "reward_timeout"):
            value = getattr(self, name)
            if not _finite(value) or value <= 0:
                raise bad(name, "must be a number > 0")
        for name in ("weight_decay", "kl_coef", "old_decay_rate", "lora_dropout", "reward_temperature",
                     "monitor_min_change", "adam_epsilon"):
            value = getattr(self, name)
            if not _finite(value) or value < 0:
                raise bad(name, "must be a number >= 0")
        for name in ("adam_beta1", "adam_beta2", "old_decay_max", "ema_decay"):
            value = getattr(self, name)
            if not _finite(value) or not 0 <= value < 1:
                raise bad(name, "must be in [0, 1)")
        if self.max_grad_norm is not None and (not _finite(self.max_grad_norm) or self.max_grad_norm <= 0):
            raise bad("max_grad_norm", "must be a number > 0 or null")
        if not (0.0 <= self.timestep_min < self.timestep_max <= 1.0):
            raise ConfigError(
                f"config fields 'timestep_min'/'timestep_max' must satisfy 0 <= min < max <= 1 "
                f"(got {self.timestep_min!r}, {self.timestep_max!r})"
            )
        if not self.lora_target_modules or not all(isinstance(m, str) and m for m in self.lora_target_modules):
            raise bad("lora_target_modules", "must be a non-empty list of module names")
        if not isinstance(self.report_to, list) or any(r not in REPORT_TO for r in self.report_to):
            raise bad("report_to", f"must be a list drawn from {', '.join(REPORT_TO)}")
        if self.resume not in RESUME_MODES and not self.resume:
            raise bad("resume", "must be auto, never or a checkpoint folder")
        if not isinstance(self.reward_kwargs, dict):
            raise bad("reward_kwargs", "must be a mapping")
        if not isinstance(self.monitor_keywords, list) or not all(isinstance(k, str) for k in self.monitor_keywords):
            raise bad("monitor_keywords", "must be a list of strings")
        if self.retire_std < 0 or not _finite(self.retire_std):
            raise bad("retire_std", "must be a number >= 0")
        if (self.group_size % self.sample_batch_size) and (self.sample_batch_size % self.group_size):
            raise ConfigError(
                f"config fields 'sample_batch_size' ({self.sample_batch_size}) and 'group_size' "
                f"({self.group_size}): one must divide the other so that sampling batches hold whole groups"
            )

    def check_required(self) -> None:
        """Raise :class:`ConfigError` when a field needed to train is empty (the reward's too)."""
        for name in ("pretrained_model", "train_data", "output_dir"):
            if not getattr(self, name):
                raise ConfigError(f"config field {name!r} is required")
        if self.reward_kind == "judge" and not (self.reward_base_url or self.reward_model):
            raise ConfigError(
                "reward_kind 'judge' needs 'reward_base_url' (with 'reward_model') or 'reward_model' "
                "(a local folder or hub id run in process)"
            )
        if self.reward_kind == "server" and not self.reward_server_url:
            raise ConfigError("reward_kind 'server' needs 'reward_server_url' (a rationalrewards serve instance)")
        if self.reward_kind == "python" and (not self.reward_target or ":" not in self.reward_target):
            raise ConfigError("reward_kind 'python' needs 'reward_target' as module:factory")

    def fingerprint(self) -> dict[str, Any]:
        """The fields a checkpoint must agree with to be resumed (shapes and the algorithm)."""
        keys = ("pretrained_model", "lora_rank", "lora_alpha", "lora_target_modules", "group_size",
                "groups_per_step", "seed")
        return {k: getattr(self, k) for k in keys}


def parse_overrides(overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """``["max_steps=10", "report_to=[jsonl]"]`` -> ``{"max_steps": 10, "report_to": ["jsonl"]}``."""
    import yaml

    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key] = raw
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _coerce(name: str, value: Any) -> Any:
    """Small conveniences YAML users expect: a single string where a list is wanted, 1e-4 as text."""
    if name in ("reward_base_url", "lora_target_modules", "report_to", "monitor_keywords") and isinstance(value, str):
        return [value]
    if name == "resume" and value in (False, None):
        return "never"
    if name == "resume" and value is True:
        return "auto"
    if isinstance(value, str) and name in _FLOAT_FIELDS:
        try:
            return float(value)
        except ValueError:
            return value
    return value


_FLOAT_FIELDS = {f.name for f in dataclasses.fields(NFTConfig) if f.type in ("float", "float | None")}


def _resolve_paths(values: dict[str, Any], base: Path) -> dict[str, Any]:
    out = dict(values)
    for name in _PATH_FIELDS:
        value = out.get(name)
        if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
            out[name] = str((base / value).resolve())
        elif isinstance(value, str) and value:
            out[name] = os.path.expanduser(value)
    resume = out.get("resume")
    if isinstance(resume, str) and resume not in RESUME_MODES and not os.path.isabs(resume):
        out["resume"] = str((base / resume).resolve())
    model = out.get("pretrained_model")
    if isinstance(model, str) and model and not os.path.isabs(model):
        candidate = base / model
        if candidate.is_dir():
            out["pretrained_model"] = str(candidate.resolve())
    return out


def config_summary(cfg: NFTConfig) -> str:
    """The resolved config as pretty JSON (for ``--dry-run`` and the run folder)."""
    return json.dumps(cfg.to_dict(), indent=2, ensure_ascii=False)
