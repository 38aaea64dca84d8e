"""PARROT options: one nested configuration, loadable from YAML and overridable from the CLI.

Precedence, lowest first: built-in defaults < the configuration a previous run saved in
``DIR/config.json`` < ``--config FILE.yaml`` < command-line flags. The saved configuration is
what lets ``parrot filter --out DIR`` continue with the teacher that ``parrot anchor`` used
without repeating every flag. API keys are never written to disk.

YAML layout (every key optional; see ``examples/parrot.yaml``)::

    pairs: data/pairs.jsonl
    out: runs/parrot
    input:   {preset: auto, columns: {prompt: caption}, include_ties: false}
    teacher: {base_url: [http://gpu1:8000/v1], model: Qwen3-VL-32B-Instruct, concurrency: 128}
    anchor:  {samples: 2, temperature: 0.7, orders: balanced, pointwise: true}
    filter:  {margin: 0.0, repredict: true, keep_scores: false, select: margin}
    sft:     {val_fraction: 0.05}
    train:   {model: Qwen/Qwen3-VL-8B-Instruct, lora: false, epochs: 3}
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ORDERS = ("as-is", "both", "balanced")
SELECT = ("first", "margin", "all")
LABEL_FORMATS = ("auto", "ab", "prob_a", "index", "ranking")


class ConfigError(ValueError):
    """An option has a wrong name, type or value; the message names it."""


@dataclass
class InputConfig:
    """How preference pairs are read.

    ``preset`` maps a known source's columns to the canonical ones (``auto`` detects it);
    ``columns`` maps canonical names (``id, task, prompt, source, image_a, image_b, label,
    chosen, rejected``) to your column names and wins over the preset. ``image_root`` resolves
    relative image paths (default: the input file's folder).
    """

    preset: str = "auto"
    columns: dict[str, str] = field(default_factory=dict)
    label_format: str = "auto"
    image_root: str | None = None
    split: str | None = None
    limit: int | None = None
    include_ties: bool = False
    workers: int = 8


@dataclass
class TeacherConfig:
    """The teacher backend (normally one or several vLLM / SGLang servers)."""

    base_url: list[str] = field(default_factory=list)
    model: str | None = None
    api_key: str | None = None
    concurrency: int = 64
    timeout: float = 600.0
    max_retries: int = 4
    cache: str | None = None
    max_pixels: int = 802_816
    # Judge prompt set shared with the student (None = the built-in released layout).
    templates: str | None = None
    # Folder overriding the teacher prompt files in rationalrewards/parrot/templates.
    teacher_templates: str | None = None
    # In-process teacher (no base_url): transformers options.
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    # US dollars per million tokens, for the cost estimate in stats.json (None = not estimated).
    price_input_per_mtok: float | None = None
    price_output_per_mtok: float | None = None


@dataclass
class AnchorConfig:
    """Phase 1: anchored generation.

    ``orders``: ``as-is`` shows the pair as given; ``both`` writes rationales for A-B and B-A;
    ``balanced`` picks one order per pair from a hash of its id so that the shown label is ~50/50
    A/B whatever the source's skew (e.g. chosen/rejected data where the winner is always first).
    """

    samples: int = 2
    pointwise: bool = True
    pointwise_samples: int | None = None
    orders: str = "balanced"
    temperature: float = 0.7
    top_p: float | None = None
    max_tokens: int = 4096
    seed: int | None = 0


@dataclass
class FilterConfig:
    """Phase 2: consistency filtering.

    ``margin``: the preferred side's score sum must exceed the other's by more than this (0 =
    any positive gap). ``pointwise_margin``: same on the pointwise rewards (0-1 scale).
    ``keep_scores``: give the re-predicting teacher the rationale with its scores (default: scores
    and winner lines removed, so the text alone has to carry the preference).
    ``select``: among a pair's surviving rationales keep the ``first``, the one with the largest
    ``margin``, or ``all``.
    """

    margin: float = 0.0
    pointwise_margin: float = 0.0
    tie_tolerance: float = 0.0
    aggregation: str = "default"
    leak_patterns: list[str] = field(default_factory=list)
    repredict: bool = True
    keep_scores: bool = False
    repredict_both_orders: bool = False
    repredict_pointwise: bool = False
    repredict_temperature: float = 0.0
    repredict_max_tokens: int = 4096
    select: str = "margin"


@dataclass
class SftConfig:
    """Phase 3 data: the student's SFT set."""

    val_fraction: float = 0.05
    split_seed: int = 0
    pairwise: bool = True
    pointwise: bool = True
    save_hf_dataset: bool = False


@dataclass
class TrainConfig:
    """Student fine-tuning; defaults are the release's recipe (reference.md §7)."""

    model: str | None = None
    data: str | None = None
    out: str | None = None
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    merge_lora: bool = True
    freeze_vision: bool = True
    learning_rate: float = 1e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 1e-6
    epochs: float = 3.0
    max_steps: int = -1
    per_device_batch_size: int = 4
    grad_accum: int = 4
    bf16: bool | None = None
    max_length: int | None = 32768
    max_pixels: int = 802_816
    gradient_checkpointing: bool | None = None
    save_steps: int = 500
    save_total_limit: int = 2
    logging_steps: int = 10
    eval: bool = True
    seed: int = 42
    resume: Literal["auto", "always", "never"] | bool = "auto"
    deepspeed: str | None = None
    dataloader_workers: int = 2


@dataclass
class ParrotConfig:
    """Every option of a PARROT run (``pairs`` and ``out`` are paths)."""

    pairs: str | None = None
    out: str | None = None
    input: InputConfig = field(default_factory=InputConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    anchor: AnchorConfig = field(default_factory=AnchorConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, where: str = "config") -> ParrotConfig:
        cfg = cls()
        cfg.update(data, where=where)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> ParrotConfig:
        return cls.from_mapping(read_yaml(path), where=str(path))

    def update(self, data: dict[str, Any] | None, *, where: str = "config") -> ParrotConfig:
        """Apply a (partial, nested) mapping; ``None`` values are ignored. Raises ConfigError."""
        _apply(self, data or {}, where)
        self.validate()
        return self

    def copy(self) -> ParrotConfig:
        return ParrotConfig.from_mapping(self.to_dict(secrets=True))

    def to_dict(self, *, secrets: bool = False) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if not secrets:
            d["teacher"].pop("api_key", None)
        return d

    def validate(self) -> None:
        a, f, s = self.anchor, self.filter, self.sft
        if a.samples < 1:
            raise ConfigError("anchor.samples must be >= 1")
        if a.pointwise_samples is not None and a.pointwise_samples < 1:
            raise ConfigError("anchor.pointwise_samples must be >= 1")
        if a.orders not in ORDERS:
            raise ConfigError(f"anchor.orders must be one of {', '.join(ORDERS)}, not {a.orders!r}")
        if a.temperature < 0:
            raise ConfigError("anchor.temperature must be >= 0")
        if f.select not in SELECT:
            raise ConfigError(f"filter.select must be one of {', '.join(SELECT)}, not {f.select!r}")
        if f.margin < 0 or f.pointwise_margin < 0 or f.tie_tolerance < 0:
            raise ConfigError("filter margins and tie_tolerance must be >= 0")
        if not 0.0 <= s.val_fraction < 1.0:
            raise ConfigError("sft.val_fraction must be in [0, 1)")
        if self.input.label_format not in LABEL_FORMATS:
            raise ConfigError(f"input.label_format must be one of {', '.join(LABEL_FORMATS)}")
        if self.teacher.concurrency < 1:
            raise ConfigError("teacher.concurrency must be >= 1")
        if self.train.resume not in ("auto", "always", "never", True, False):
            raise ConfigError("train.resume must be auto, always or never")

    @property
    def pointwise_samples(self) -> int:
        return self.anchor.pointwise_samples or self.anchor.samples


def _apply(obj: Any, data: dict[str, Any], where: str, prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix or 'top level'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        dotted = f"{prefix}{name}"
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{where}: unknown option {dotted!r} (known here: {known})")
        if value is None:
            continue
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            _apply(current, value, where, dotted + ".")
            continue
        setattr(obj, name, _coerce(value, current, fields[name], where, dotted))


def _coerce(value: Any, current: Any, f: dataclasses.Field[Any], where: str, dotted: str) -> Any:
    kind = str(f.type)
    if kind.startswith("list"):
        if isinstance(value, (str, Path)):
            return [str(value)]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {dotted} must be a list")
        return [str(v) for v in value]
    if kind.startswith("dict"):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {dotted} must be a mapping")
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(current, bool) or kind.startswith("bool"):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        if "Literal" in kind and isinstance(value, str):
            return value
        raise ConfigError(f"{where}: {dotted} must be true or false, not {value!r}")
    try:
        if kind.startswith("int") and not isinstance(value, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind.startswith("float") and not isinstance(value, bool):
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {dotted} must be a number, not {value!r}") from None
    if "float" in kind and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if "int" in kind and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, Path):
        return str(value)
    return value


def read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of options")
    return data


SAVED_CONFIG = "config.json"


def load_saved(out: str | Path) -> dict[str, Any]:
    """The configuration a previous run saved in ``out`` ({} if none)."""
    p = Path(out) / SAVED_CONFIG
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: not valid JSON ({exc.msg}); delete it to start from defaults") from None
    return data if isinstance(data, dict) else {}


def resolve_config(
    *,
    out: str | Path | None = None,
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> ParrotConfig:
    """Defaults < ``out/config.json`` < YAML < overrides (a nested dict; None values ignored)."""
    cfg = ParrotConfig()
    yaml_data = read_yaml(yaml_path) if yaml_path else {}
    target = (overrides or {}).get("out") or yaml_data.get("out") or out
    if target:
        saved = load_saved(target)
        saved.pop("out", None)
        cfg.update(saved, where=str(Path(target) / SAVED_CONFIG))
    cfg.update(yaml_data, where=str(yaml_path))
    cfg.update(overrides or {}, where="command line")
    if target and not cfg.out:
        cfg.out = str(target)
    return cfg


# Settings whose change makes earlier teacher answers stale are detected per request (each row
# stores a digest of what was sent); these are only reported when they change.
GENERATION_KEYS = ("teacher.model", "teacher.templates", "teacher.teacher_templates", "anchor.temperature",
                   "anchor.max_tokens", "anchor.seed", "anchor.top_p")


def changed_settings(old: dict[str, Any], new: ParrotConfig) -> list[str]:
    """Dotted names of generation settings that differ from a previous run's saved config."""
    out = []
    cur = new.to_dict()
    for dotted in GENERATION_KEYS:
        section, key = dotted.split(".")
        prev = old.get(section)
        if isinstance(prev, dict) and key in prev and prev[key] != cur[section][key]:
            out.append(dotted)
    return out
