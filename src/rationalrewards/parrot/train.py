"""Phase 3 training: supervised fine-tuning of the student on the kept rationales.

TRL's ``SFTTrainer`` with ``assistant_only_loss=True`` (only the assistant turn, including its
end-of-turn token, is supervised; TRL swaps in a chat template with ``{% generation %}`` markers
when the model's own lacks them). The vision tower and the projector are frozen by default, as in
the release; full fine-tuning of the language model is the default, LoRA (peft) is one flag away.
Defaults are the release's hyperparameters (reference.md §7): lr 1e-5 cosine, 5% warmup, weight
decay 1e-6, 3 epochs, per-device batch 4 x accumulation 4, bf16 where supported, max length
32768, images capped at 802,816 pixels.

The output folder loads directly in :meth:`RewardModel.from_pretrained`: a full fine-tune or a
merged LoRA is a complete checkpoint (model + processor); with ``merge_lora=False`` the folder is
a peft adapter to load as ``RewardModel.from_pretrained(BASE, adapter=OUT)``.

Multi-GPU: launch the same command through accelerate, e.g. with DeepSpeed ZeRO-3::

    accelerate launch --config_file examples/accelerate_zero3.yaml -m rationalrewards.cli.main \\
        parrot train --data runs/parrot/sft --model Qwen/Qwen3-VL-8B-Instruct --out ckpt/student
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

from .config import TrainConfig

# Module-name segments of vision encoders and vision-language projectors across the Qwen-VL
# family (``model.visual`` holds Qwen3-VL's tower, its ``merger`` and the deepstack mergers)
# and other common VLMs.
VISION_MODULES = ("visual", "vision_tower", "vision_model", "multi_modal_projector", "mm_projector", "vision_embed")
_VISION_RE = re.compile(r"(?:^|\.)(?:" + "|".join(VISION_MODULES) + r")(?:\.|$)")


class TrainError(RuntimeError):
    """Training cannot start (no data, unusable model folder...); the message says why."""


def freeze_vision(model: Any) -> int:
    """Freeze the vision tower and projector; returns the number of parameters frozen."""
    n = 0
    for name, param in model.named_parameters():
        if _VISION_RE.search(name):
            param.requires_grad_(False)
            n += param.numel()
    return n


def lora_target_regex(modules: list[str]) -> str:
    """A peft ``target_modules`` regex: the given linear layers of the language model only."""
    alts = "|".join(re.escape(m) for m in modules)
    vision = "|".join(VISION_MODULES)
    return rf"^(?!.*(?:{vision})).*\.(?:{alts})$"


def cap_image_pixels(processor: Any, max_pixels: int) -> None:
    """Tell the image processor not to go beyond ``max_pixels`` (the training cap)."""
    ip = getattr(processor, "image_processor", None)
    if ip is None:
        return
    size = getattr(ip, "size", None)
    try:
        if size is not None and "longest_edge" in size:
            size["longest_edge"] = min(int(size["longest_edge"]), max_pixels)
    except (TypeError, KeyError):
        pass
    if getattr(ip, "max_pixels", None):
        ip.max_pixels = min(int(ip.max_pixels), max_pixels)


def _device_info() -> tuple[bool, bool]:
    import torch

    cuda = torch.cuda.is_available()
    return cuda, bool(cuda and torch.cuda.is_bf16_supported())


def build_trainer(cfg: TrainConfig) -> tuple[Any, Any, dict[str, Any]]:
    """(trainer, processor, info) ready to ``train()``; used by :func:`train_student` and tests."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    from .sft import load_sft_dataset

    if not cfg.model:
        raise TrainError("no base model: pass --model PATH_OR_HF_ID")
    if not cfg.data:
        raise TrainError("no training data: pass --data DIR/sft")
    if not cfg.out:
        raise TrainError("no output folder: pass --out CKPT")
    try:
        train_ds = load_sft_dataset(cfg.data, "train")
    except FileNotFoundError as exc:
        raise TrainError(str(exc)) from None
    if len(train_ds) == 0:
        raise TrainError(f"{cfg.data}: the train split is empty (did the filter keep anything?)")
    val_ds = None
    if cfg.eval:
        try:
            val_ds = load_sft_dataset(cfg.data, "validation")
        except FileNotFoundError:
            val_ds = None
        if val_ds is not None and len(val_ds) == 0:
            val_ds = None
    cuda, bf16_ok = _device_info()
    bf16 = bf16_ok if cfg.bf16 is None else bool(cfg.bf16)
    try:
        processor = AutoProcessor.from_pretrained(cfg.model)
    except OSError as exc:
        raise TrainError(f"cannot load a processor from {cfg.model}: {exc}") from None
    if not hasattr(processor, "image_processor"):
        raise TrainError(f"{cfg.model}: AutoProcessor has no image processor (is torchvision importable?)")
    cap_image_pixels(processor, cfg.max_pixels)
    try:
        model = AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=torch.bfloat16 if bf16 else torch.float32)
    except OSError as exc:
        raise TrainError(f"cannot load a model from {cfg.model}: {exc}") from None
    frozen = freeze_vision(model) if cfg.freeze_vision else 0
    peft_config = None
    if cfg.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules=lora_target_regex(cfg.lora_target_modules), task_type="CAUSAL_LM")
    out = Path(cfg.out)
    grad_ckpt = cuda if cfg.gradient_checkpointing is None else cfg.gradient_checkpointing
    by_epoch = cfg.max_steps is None or cfg.max_steps <= 0
    # transformers renamed gradient_checkpointing to activation_checkpointing; use what exists.
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    ckpt_opt = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    args = SFTConfig(
        output_dir=str(out / "checkpoints"),
        assistant_only_loss=True,
        max_length=cfg.max_length,
        per_device_train_batch_size=cfg.per_device_batch_size,
        per_device_eval_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps and cfg.max_steps > 0 else -1,
        bf16=bf16,
        use_cpu=not cuda,
        **{ckpt_opt: grad_ckpt},
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        eval_strategy="epoch" if (val_ds is not None and by_epoch) else "no",
        seed=cfg.seed,
        deepspeed=cfg.deepspeed,
        dataloader_num_workers=cfg.dataloader_workers if cuda else 0,
        report_to="none",
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                         processing_class=processor, peft_config=peft_config)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    info = {"train_examples": len(train_ds), "validation_examples": len(val_ds) if val_ds is not None else 0,
            "frozen_vision_params": frozen, "trainable_params": trainable, "bf16": bf16, "device": "cuda" if cuda else "cpu",
            "lora": cfg.lora, "gradient_checkpointing": grad_ckpt}
    return trainer, processor, info


def loss_line(step: int, max_steps: int, logs: dict[str, Any]) -> str | None:
    """One readable line for a trainer log event (``step 10/40: loss 1.84, lr 1e-05``), or None
    for an event without a training or eval metric (the end-of-training runtime summary)."""
    names = (("loss", "loss"), ("eval_loss", "eval loss"), ("grad_norm", "grad norm"), ("learning_rate", "lr"))
    parts = []
    for key, label in names:
        value = logs.get(key)
        try:
            parts.append(f"{label} {float(value):.4g}")  # the trainer logs some values as strings
        except (TypeError, ValueError):
            continue
    if not parts:
        return None
    return f"step {step}/{max_steps}: " + ", ".join(parts)


def replace_trainer_printing(trainer: Any, say: Any) -> None:
    """Route the trainer's log events to ``say`` as :func:`loss_line` lines.

    Left alone, the trainer prints each log event as a raw dict (``{'loss': '1.84', ...}``) and
    draws tqdm bars with carriage returns, which a log file keeps as one ever-growing line; the
    command decides what to show (one line per stage, details with --verbose).
    """
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class LossLines(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if state.is_world_process_zero and logs:
                line = loss_line(state.global_step, state.max_steps, logs)
                if line is not None:
                    say(line)

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(LossLines())


def _resume_arg(cfg: TrainConfig) -> str | bool | None:
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = Path(cfg.out or ".") / "checkpoints"
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    mode = cfg.resume
    if mode is True or mode == "always":
        if last is None:
            raise TrainError(f"--resume always: no checkpoint under {ckpt_dir}")
        return last
    if mode is False or mode == "never":
        return None
    return last


def train_student(cfg: TrainConfig, *, log: Any = None) -> dict[str, Any]:
    """Fine-tune the student and save a folder that ``RewardModel.from_pretrained`` loads.

    Returns a summary (also written to ``OUT/parrot_train.json``).
    """
    say = log or (lambda _msg: None)
    t0 = time.perf_counter()
    trainer, processor, info = build_trainer(cfg)
    replace_trainer_printing(trainer, say)
    resume = _resume_arg(cfg)
    if resume:
        say(f"resuming from {resume}")
    say(f"training on {info['train_examples']} examples ({info['device']}, "
        f"{'LoRA' if cfg.lora else 'full fine-tune'}, vision {'frozen' if cfg.freeze_vision else 'trained'})")
    result = trainer.train(resume_from_checkpoint=resume)
    metrics: dict[str, Any] = {"train_loss": result.training_loss, "global_step": result.global_step}
    if trainer.eval_dataset is not None:
        metrics["eval_loss"] = trainer.evaluate().get("eval_loss")
    out = Path(cfg.out or ".")
    summary = {"out": str(out), "base_model": cfg.model, "data": cfg.data, **info, **metrics,
               "resumed_from": resume or None, "config": _jsonable(cfg)}
    if cfg.lora:
        adapter_dir = out / "adapter" if cfg.merge_lora else out
        trainer.save_model(str(adapter_dir))
        summary["adapter"] = str(adapter_dir)
        if cfg.merge_lora and trainer.accelerator.is_main_process:
            _merge_adapter(cfg.model or "", adapter_dir, out, info["bf16"])
            summary["merged"] = True
            processor.save_pretrained(str(out))
        elif trainer.accelerator.is_main_process:
            summary["merged"] = False
            processor.save_pretrained(str(out))
    else:
        trainer.save_model(str(out))
        summary["merged"] = None
        if trainer.accelerator.is_main_process:
            processor.save_pretrained(str(out))
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    if trainer.accelerator.is_main_process:
        (out / "parrot_train.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return summary


def _merge_adapter(base: str, adapter_dir: Path, out: Path, bf16: bool) -> None:
    """Reload the base on CPU, apply the adapter and save the merged weights (works the same after
    single-GPU, DDP or ZeRO-3 training, where the live model may be sharded)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.bfloat16 if bf16 else torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out))


def _jsonable(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
