"""``rationalrewards parrot run | anchor | filter | build-sft | train``.

Every option defaults to "not given" so that the precedence defaults < DIR/config.json <
--config FILE.yaml < flags holds; help texts state the built-in defaults.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..cli.common import (
    EXIT_BACKEND,
    EXIT_INPUT,
    EXIT_OK,
    JsonOpt,
    check_aggregation,
    check_number,
    emit_json,
    err_console,
    executor_command,
    fail,
    looks_like_missing_path,
    out_console,
    replace_parameter,
)

parrot_app = typer.Typer(
    name="parrot",
    help="PARROT: anchored rationales -> consistency filtering -> student SFT data and training.",
    no_args_is_help=True,
)

# -- options ----------------------------------------------------------------------------------------
PairsOpt = Annotated[str | None, typer.Option("--pairs", help="Preference pairs: JSONL, Parquet, a folder of them, or a saved HF dataset.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "--dir", help="Run folder (all phases read and write here).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file with any options (see examples/parrot.yaml).")]
TeacherUrlOpt = Annotated[list[str] | None, typer.Option("--teacher-base-url", "--base-url", help="Teacher OpenAI-compatible server; repeat to balance over several.")]
TeacherModelOpt = Annotated[str | None, typer.Option("--teacher-model", "--model", help="Served teacher model name (or a local folder without a URL).")]
TeacherKeyOpt = Annotated[str | None, typer.Option("--teacher-api-key", "--api-key", help="Bearer key (default: $OPENAI_API_KEY).")]
ConcOpt = Annotated[int | None, typer.Option("--concurrency", callback=check_number(1), help="Teacher requests in flight.", show_default="64")]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", callback=check_number(0, above=True), help="Seconds per teacher request attempt.", show_default="600")]
RetriesOpt = Annotated[int | None, typer.Option("--max-retries", callback=check_number(0), help="Retries per teacher call.", show_default="4")]
TempOpt = Annotated[float | None, typer.Option("--temperature", callback=check_number(0), help="Anchored sampling temperature.", show_default="0.7")]
MaxTokOpt = Annotated[int | None, typer.Option("--max-tokens", callback=check_number(1), help="Anchored max tokens.", show_default="4096")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Sampling seed; sample k uses seed+k.", show_default="0")]
CacheOpt = Annotated[Path | None, typer.Option("--cache", help="Response cache folder for teacher calls (off by default).")]
TemplatesOpt = Annotated[Path | None, typer.Option("--templates", help="Judge template set shared by teacher and student.")]
TeacherTplOpt = Annotated[Path | None, typer.Option("--teacher-templates", help="Folder overriding the PARROT teacher prompt files.")]
MaxPixOpt = Annotated[int | None, typer.Option("--max-pixels", callback=check_number(1), help="Images are stored at most this large.", show_default="802816")]
SamplesOpt = Annotated[int | None, typer.Option("--samples", callback=check_number(1), help="Anchored rationales per pair and order.", show_default="2")]
PointwiseOpt = Annotated[bool | None, typer.Option("--pointwise/--no-pointwise", help="Also anchored pointwise critiques.", show_default="on")]
PwSamplesOpt = Annotated[int | None, typer.Option("--pointwise-samples", callback=check_number(1), help="Pointwise samples per image.", show_default="same as --samples")]
OrdersOpt = Annotated[str | None, typer.Option("--orders", help="as-is | both | balanced.", show_default="balanced")]
PresetOpt = Annotated[str | None, typer.Option("--preset", help="Column preset: auto, canonical, pickapic, hpdv3, imagereward, editreward, genai-bench, chosen-rejected.")]
ColumnOpt = Annotated[list[str] | None, typer.Option("--column", help="Column mapping CANONICAL=SOURCE, e.g. prompt=caption (repeatable).")]
LabelFmtOpt = Annotated[str | None, typer.Option("--label-format", help="auto | ab | prob_a | index | ranking.")]
ImageRootOpt = Annotated[Path | None, typer.Option("--image-root", help="Folder relative image paths resolve against.")]
SplitOpt = Annotated[str | None, typer.Option("--split", help="Split of a saved HF DatasetDict.", show_default="train")]
LimitOpt = Annotated[int | None, typer.Option("--limit", callback=check_number(1), help="Use only the first N input rows.")]
TiesOpt = Annotated[bool | None, typer.Option("--include-ties/--skip-ties", help="Train on tie pairs too.", show_default="skip")]
MarginOpt = Annotated[float | None, typer.Option("--margin", callback=check_number(0), help="Required score-sum gap toward the label.", show_default="0")]
PwMarginOpt = Annotated[float | None, typer.Option("--pointwise-margin", callback=check_number(0), help="Required reward gap for pointwise.", show_default="0")]
TieTolOpt = Annotated[float | None, typer.Option("--tie-tolerance", callback=check_number(0), help="Sum gap still called a tie.", show_default="0")]
AggOpt = Annotated[str | None, typer.Option("--aggregation", callback=check_aggregation, help="default | release-edit-rl | release-pairwise | key=weight,...")]
LeakOpt = Annotated[list[str] | None, typer.Option("--leak-pattern", help="Extra regex that marks a rationale as leaking (repeatable).")]
RepredictOpt = Annotated[bool | None, typer.Option("--repredict/--no-repredict", help="Predictive-sufficiency check.", show_default="on")]
KeepScoresOpt = Annotated[bool | None, typer.Option("--keep-scores/--strip-scores", help="Show scores to the re-predicting teacher.", show_default="strip")]
BothOrdersOpt = Annotated[bool | None, typer.Option("--repredict-both-orders/--repredict-one-order", help="Require the right prediction in both image orders.", show_default="one")]
RpPointOpt = Annotated[bool | None, typer.Option("--repredict-pointwise/--no-repredict-pointwise", help="Re-predict from pointwise critiques too.", show_default="off")]
SelectOpt = Annotated[str | None, typer.Option("--select", help="Among surviving samples of a pair: first | margin | all.", show_default="margin")]
ValOpt = Annotated[float | None, typer.Option("--val-fraction", callback=check_number(0, high=0.99), help="Share of pairs in validation.", show_default="0.05")]
HfOpt = Annotated[bool | None, typer.Option("--save-hf-dataset/--no-hf-dataset", help="Also save a self-contained datasets folder.", show_default="off")]
PriceInOpt = Annotated[float | None, typer.Option("--price-input", callback=check_number(0), help="USD per million prompt tokens, for the cost estimate.")]
PriceOutOpt = Annotated[float | None, typer.Option("--price-output", callback=check_number(0), help="USD per million completion tokens.")]


def _columns(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    out = {}
    for v in values:
        key, sep, col = v.partition("=")
        if not sep or not key.strip() or not col.strip():
            fail(f"--column expects CANONICAL=SOURCE, got {v!r}", EXIT_INPUT)
        out[key.strip()] = col.strip()
    return out


def _s(v: Any) -> Any:
    return str(v) if isinstance(v, Path) else v


def _progress(desc: str, total: int) -> Any:
    from ..cli.common import progress_bar

    return progress_bar(desc, total or None)  # type: ignore[arg-type]


def _run_phases(phases: tuple[str, ...], o: dict[str, Any]) -> None:
    from ..backends import BackendError
    from ..io import InputFileError
    from .config import ConfigError, resolve_config
    from .pipeline import Parrot, ParrotError, check_input

    overrides = {
        "pairs": _s(o["pairs"]),
        "out": _s(o["out"]),
        "input": {"preset": o["preset"], "columns": _columns(o["column"]), "label_format": o["label_format"],
                  "image_root": _s(o["image_root"]), "split": o["split"], "limit": o["limit"],
                  "include_ties": o["include_ties"]},
        "teacher": {"base_url": o["teacher_base_url"] or None, "model": o["teacher_model"],
                    "api_key": o["teacher_api_key"], "concurrency": o["concurrency"], "timeout": o["timeout"],
                    "max_retries": o["max_retries"], "cache": _s(o["cache"]), "max_pixels": o["max_pixels"],
                    "templates": _s(o["templates"]), "teacher_templates": _s(o["teacher_templates"]),
                    "price_input_per_mtok": o["price_input"], "price_output_per_mtok": o["price_output"]},
        "anchor": {"samples": o["samples"], "pointwise": o["pointwise"], "pointwise_samples": o["pointwise_samples"],
                   "orders": o["orders"], "temperature": o["temperature"], "max_tokens": o["max_tokens"],
                   "seed": o["seed"]},
        "filter": {"margin": o["margin"], "pointwise_margin": o["pointwise_margin"],
                   "tie_tolerance": o["tie_tolerance"], "aggregation": o["aggregation"],
                   "leak_patterns": o["leak_pattern"] or None, "repredict": o["repredict"],
                   "keep_scores": o["keep_scores"], "repredict_both_orders": o["repredict_both_orders"],
                   "repredict_pointwise": o["repredict_pointwise"], "select": o["select"]},
        "sft": {"val_fraction": o["val_fraction"], "save_hf_dataset": o["save_hf_dataset"]},
    }
    if not o["teacher_base_url"] and o["teacher_model"] and looks_like_missing_path(o["teacher_model"]):
        fail(f"--teacher-model: no model folder at {o['teacher_model']} (a hub id looks like ORG/NAME)", EXIT_INPUT)
    try:
        cfg = resolve_config(yaml_path=o["config"], overrides=overrides)
        if not cfg.out:
            fail("give the run folder: --out DIR (or `out:` in the config file)", EXIT_INPUT)
        check_input(cfg)
        parrot = Parrot(cfg, progress=_progress, log=lambda m: err_console.print(m, markup=False, highlight=False),
                        executor=o.get("executor"))
        stats = parrot.run(phases)
    except (ConfigError, InputFileError, ParrotError, ValueError, FileNotFoundError) as exc:
        fail(str(exc), EXIT_INPUT)
    except BackendError as exc:
        fail(str(exc), EXIT_BACKEND)
    if o["json_out"]:
        emit_json(stats)
    else:
        sys.stdout.write((Path(cfg.out) / "summary.md").read_text(encoding="utf-8"))
        sys.stdout.flush()
    failed = stats["anchor"]["failed_pending_retry"] + stats["filter"]["repredict_failed_pending_retry"]
    if failed and any(p in phases for p in ("anchor", "filter")):
        err_console.print(f"{failed} teacher call(s) failed after retries; rerun the same command to retry them",
                          markup=False, highlight=False)
        raise typer.Exit(EXIT_BACKEND)
    raise typer.Exit(EXIT_OK)


def _phase_command(phases: tuple[str, ...], doc: str) -> Any:
    def command(
        pairs: PairsOpt = None,
        out: OutOpt = None,
        config: ConfigOpt = None,
        teacher_base_url: TeacherUrlOpt = None,
        teacher_model: TeacherModelOpt = None,
        teacher_api_key: TeacherKeyOpt = None,
        concurrency: ConcOpt = None,
        timeout: TimeoutOpt = None,
        max_retries: RetriesOpt = None,
        temperature: TempOpt = None,
        max_tokens: MaxTokOpt = None,
        seed: SeedOpt = None,
        cache: CacheOpt = None,
        templates: TemplatesOpt = None,
        teacher_templates: TeacherTplOpt = None,
        max_pixels: MaxPixOpt = None,
        samples: SamplesOpt = None,
        pointwise: PointwiseOpt = None,
        pointwise_samples: PwSamplesOpt = None,
        orders: OrdersOpt = None,
        preset: PresetOpt = None,
        column: ColumnOpt = None,
        label_format: LabelFmtOpt = None,
        image_root: ImageRootOpt = None,
        split: SplitOpt = None,
        limit: LimitOpt = None,
        include_ties: TiesOpt = None,
        margin: MarginOpt = None,
        pointwise_margin: PwMarginOpt = None,
        tie_tolerance: TieTolOpt = None,
        aggregation: AggOpt = None,
        leak_pattern: LeakOpt = None,
        repredict: RepredictOpt = None,
        keep_scores: KeepScoresOpt = None,
        repredict_both_orders: BothOrdersOpt = None,
        repredict_pointwise: RpPointOpt = None,
        select: SelectOpt = None,
        val_fraction: ValOpt = None,
        save_hf_dataset: HfOpt = None,
        price_input: PriceInOpt = None,
        price_output: PriceOutOpt = None,
        json_out: JsonOpt = False,
        executor: Any = None,
    ) -> None:
        _run_phases(phases, dict(locals()))

    command.__doc__ = doc
    # The phases that call the teacher can run those calls on Ray actors; the others do not
    # show the executor options at all.
    if {"anchor", "filter"} & set(phases):
        return executor_command(command)
    return replace_parameter(command, "executor", [], lambda _values: None)


parrot_app.command("run")(_phase_command(
    ("ingest", "anchor", "filter", "build-sft"),
    "All phases: read --pairs, anchor rationales with the teacher, filter them, write DIR/sft. Resumable.",
))
parrot_app.command("anchor")(_phase_command(
    ("ingest", "anchor"),
    "Phase 1: read --pairs (once) and generate anchored rationales into DIR/anchored.jsonl.",
))
parrot_app.command("filter")(_phase_command(
    ("filter",),
    "Phase 2: consistency filtering and re-prediction into DIR/filtered.jsonl.",
))
parrot_app.command("build-sft")(_phase_command(
    ("build-sft",),
    "Phase 3 data: write the student's SFT set (TRL + LLaMA-Factory sharegpt) into DIR/sft.",
))


@parrot_app.command("train")
def train(
    data: Annotated[Path | None, typer.Option("--data", help="DIR/sft written by build-sft (or the run folder).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Base student model folder or HF id.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output checkpoint folder.")] = None,
    config: ConfigOpt = None,
    lora: Annotated[bool | None, typer.Option("--lora/--full", help="LoRA (peft) instead of a full fine-tune.", show_default="full")] = None,
    lora_r: Annotated[int | None, typer.Option("--lora-r", callback=check_number(1), help="LoRA rank.", show_default="16")] = None,
    lora_alpha: Annotated[int | None, typer.Option("--lora-alpha", callback=check_number(1), help="LoRA alpha.", show_default="32")] = None,
    merge_lora: Annotated[bool | None, typer.Option("--merge-lora/--no-merge-lora", help="Save merged weights.", show_default="merge")] = None,
    freeze_vision: Annotated[bool | None, typer.Option("--freeze-vision/--train-vision", help="Freeze vision tower + projector.", show_default="frozen")] = None,
    learning_rate: Annotated[float | None, typer.Option("--learning-rate", "--lr", callback=check_number(0, above=True), help="Peak learning rate.", show_default="1e-5")] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", callback=check_number(0, above=True), help="Passes over the training data.", show_default="3")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", callback=check_number(1), help="Stop after N optimizer steps (overrides epochs).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", callback=check_number(1), help="Per-device batch.", show_default="4")] = None,
    grad_accum: Annotated[int | None, typer.Option("--grad-accum", callback=check_number(1), help="Gradient accumulation.", show_default="4")] = None,
    max_length: Annotated[int | None, typer.Option("--max-length", callback=check_number(1), help="Max tokens per example.", show_default="32768")] = None,
    max_pixels: Annotated[int | None, typer.Option("--max-pixels", callback=check_number(1), help="Image cap.", show_default="802816")] = None,
    bf16: Annotated[bool | None, typer.Option("--bf16/--fp32", help="bfloat16 weights and compute.", show_default="bf16 where the GPU supports it")] = None,
    gradient_checkpointing: Annotated[bool | None, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations to save memory.", show_default="on GPU")] = None,
    save_steps: Annotated[int | None, typer.Option("--save-steps", callback=check_number(1), help="Checkpoint every N steps.", show_default="500")] = None,
    logging_steps: Annotated[int | None, typer.Option("--logging-steps", callback=check_number(1), help="Log the loss every N steps.", show_default="10")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="auto | always | never.", show_default="auto: resume if a checkpoint exists")] = None,
    deepspeed: Annotated[Path | None, typer.Option("--deepspeed", help="DeepSpeed JSON config (or use accelerate launch).")] = None,
    eval: Annotated[bool | None, typer.Option("--eval/--no-eval", help="Evaluate on the validation split.", show_default="on")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Training seed.", show_default="42")] = None,
    verbose: Annotated[bool, typer.Option(
        "-v", "--verbose", help="Also print the loss every --logging-steps and library warnings.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Fine-tune the student on DIR/sft (TRL SFTTrainer, assistant-only loss)."""
    from .config import ConfigError, ParrotConfig, TrainConfig, read_yaml
    from .train import TrainError, train_student

    if model is not None and looks_like_missing_path(model):
        fail(f"--model: no model folder at {model} (a hub id looks like ORG/NAME)", EXIT_INPUT)

    try:
        yaml_train = (read_yaml(config).get("train") or {}) if config else {}
        holder = ParrotConfig()
        holder.update({"train": yaml_train}, where=str(config))
        holder.update({"train": {
            "data": _s(data), "model": model, "out": _s(out), "lora": lora, "lora_r": lora_r, "lora_alpha": lora_alpha,
            "merge_lora": merge_lora, "freeze_vision": freeze_vision, "learning_rate": learning_rate, "epochs": epochs,
            "max_steps": max_steps, "per_device_batch_size": batch_size, "grad_accum": grad_accum,
            "max_length": max_length, "max_pixels": max_pixels, "bf16": bf16,
            "gradient_checkpointing": gradient_checkpointing, "save_steps": save_steps, "logging_steps": logging_steps,
            "resume": resume, "deepspeed": _s(deepspeed), "eval": eval, "seed": seed,
        }}, where="command line")
        cfg: TrainConfig = holder.train
        from ..cli.progress import StageLog, quiet_libraries

        quiet_libraries(verbose=verbose)
        with StageLog(err_console, verbose=verbose) as log:
            log("parrot: train ...")
            summary = train_student(cfg, log=log)
            log(f"parrot: train done in {summary['seconds']}s")
    except (ConfigError, TrainError, ValueError) as exc:
        fail(str(exc), EXIT_INPUT)
    if json_out:
        emit_json(summary)
    else:
        keys = ("out", "train_examples", "validation_examples", "train_loss", "eval_loss", "global_step", "merged",
                "adapter", "seconds")
        for k in keys:
            if summary.get(k) is not None:
                out_console.print(f"{k}: {summary[k]}", markup=False, highlight=False)
        out_console.print(f"load it with: RewardModel.from_pretrained({summary['out']!r})"
                          if cfg.merge_lora or not cfg.lora else
                          f"load it with: RewardModel.from_pretrained({cfg.model!r}, adapter={summary['out']!r})",
                          markup=False, highlight=False)
    raise typer.Exit(EXIT_OK)


def register(app: typer.Typer) -> None:
    """Add ``parrot`` and its sub-commands to the ``rationalrewards`` app."""
    app.add_typer(parrot_app, name="parrot")
