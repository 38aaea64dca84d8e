"""DiffusionNFT trainer step time and GPU memory on a mid-size random FLUX pipeline (one H100).

The pipeline is FLUX.1-dev's width (24 heads x 128, guidance embedding, 16-channel VAE with 8x
downsampling) with 4 double and 8 single blocks (~2.5B transformer parameters instead of 12B),
random weights, built in memory (no download). It is trained with LoRA r=32 on
to_q/to_k/to_v/to_out.0 at 512x512, K=8 images per group, with the built-in brightness reward
(so the numbers are the trainer's own cost, without a judge). One warm-up iteration, then
``--steps`` measured ones. Prints a JSON record (also written to ``--out``, or to
``$OUT/gpu_rl_trainer.json`` when ``$OUT`` is set):

* seconds per iteration and per phase (sampling + decoding, waiting for rewards, DiffusionNFT
  updates), images per second;
* peak GPU memory (allocated and reserved) during sampling and during training;
* parameter counts (transformer, LoRA).

    python bench/gpu_rl_trainer.py                        # the H100 measurement (bf16)
    python bench/gpu_rl_trainer.py --gradient-checkpointing
    python bench/gpu_rl_trainer.py --tiny                 # a CPU smoke run of the same code path (~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPTS = ["a red cat on a table", "a blue dog in the snow", "a green tree near a lake", "a yellow sun over a city",
           "a white house with a red door", "a dark road at night", "a small bird on a branch", "a tall glass building"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="DiffusionNFT step time and memory on a mid-size random FLUX pipeline.")
    p.add_argument("--tiny", action="store_true", help="tiny sizes on CPU: checks that the script runs")
    p.add_argument("--steps", type=int, default=3, help="measured iterations (after one warm-up)")
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--layers", type=int, default=4, help="double-stream blocks")
    p.add_argument("--single-layers", type=int, default=8, help="single-stream blocks")
    p.add_argument("--heads", type=int, default=24)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--groups", type=int, default=2, help="prompt groups per iteration")
    p.add_argument("--sample-batch-size", type=int, default=8)
    p.add_argument("--train-batch-size", type=int, default=4)
    p.add_argument("--inference-steps", type=int, default=10)
    p.add_argument("--sampler", default="heun", choices=["heun", "euler"])
    p.add_argument("--timesteps-per-sample", type=int, default=2)
    p.add_argument("--max-sequence-length", type=int, default=512)
    p.add_argument("--lora-rank", type=int, default=32)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--kl-coef", type=float, default=0.0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.tiny:
        args.resolution, args.layers, args.single_layers, args.heads, args.head_dim = 32, 1, 1, 2, 16
        args.group_size, args.groups, args.sample_batch_size, args.train_batch_size = 2, 2, 4, 4
        args.inference_steps, args.max_sequence_length, args.lora_rank, args.steps = 2, 16, 4, min(args.steps, 2)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from rationalrewards.rl.config import NFTConfig
    from rationalrewards.rl.trainer import BrightnessReward, NFTTrainer
    from rationalrewards.testing.tiny_pipelines_rl import random_flux_pipeline

    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        print("error: no CUDA device; run with --tiny for a CPU smoke run", file=sys.stderr)
        return 2
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    t0 = time.perf_counter()
    vae_channels = (8, 8) if args.tiny else (128, 256, 512, 512)
    pipe = random_flux_pipeline(num_layers=args.layers, num_single_layers=args.single_layers,
                                num_attention_heads=args.heads, attention_head_dim=args.head_dim,
                                vae_channels=vae_channels, latent_channels=4 if args.tiny else 16,
                                dtype=dtype, device=device)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in pipe.transformer.parameters())

    phases: dict[str, list[dict[str, float]]] = {"sample": [], "train": []}

    def measured(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            out = fn(*a, **k)
            if cuda:
                torch.cuda.synchronize()
            rec = {"s": time.perf_counter() - start}
            if cuda:
                rec["peak_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
                rec["peak_reserved_gb"] = torch.cuda.max_memory_reserved() / 2**30
            phases[name].append(rec)
            return out
        return wrapper

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "prompts.jsonl"
        data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
        cfg = NFTConfig(
            pretrained_model="(in memory)", train_data=str(data), output_dir=str(Path(tmp) / "run"),
            dtype="bfloat16" if cuda else "float32", resolution=args.resolution,
            num_inference_steps=args.inference_steps, sampler=args.sampler,
            max_sequence_length=args.max_sequence_length, group_size=args.group_size, groups_per_step=args.groups,
            sample_batch_size=args.sample_batch_size, train_batch_size=args.train_batch_size,
            timesteps_per_sample=args.timesteps_per_sample, lora_rank=args.lora_rank, lora_alpha=2 * args.lora_rank,
            gradient_checkpointing=args.gradient_checkpointing, kl_coef=args.kl_coef, max_steps=args.steps + 1,
            eval_every=0, save_every=0, report_to=["jsonl"], resume="never", reward_kind="brightness",
        )
        trainer = NFTTrainer(cfg, reward=BrightnessReward(), pipeline=pipe, verbose=True)
        trainer._generate = measured("sample", trainer._generate)  # type: ignore[method-assign]
        trainer._train_on = measured("train", trainer._train_on)  # type: ignore[method-assign]
        n_lora = sum(p.numel() for p in trainer.params)
        with trainer:
            trainer.train()
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    measured_rows = rows[1:]  # the first iteration pays for kernel selection and allocator growth
    sample = phases["sample"][1:]
    train = phases["train"][1:]
    images = args.group_size * args.groups
    step_s = statistics.fmean(r["time/step_s"] for r in measured_rows)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype).replace("torch.", ""),
        "transformer_params_m": round(n_params / 1e6, 1),
        "lora_params": n_lora,
        "resolution": args.resolution,
        "images_per_step": images,
        "inference_steps": args.inference_steps,
        "sampler": args.sampler,
        "timesteps_per_sample": args.timesteps_per_sample,
        "train_batch_size": args.train_batch_size,
        "gradient_checkpointing": args.gradient_checkpointing,
        "measured_steps": len(measured_rows),
        "step_s": step_s,
        "sample_s": statistics.fmean(r["s"] for r in sample),
        "reward_wait_s": statistics.fmean(r["time/reward_wait_s"] for r in measured_rows),
        "train_s": statistics.fmean(r["s"] for r in train),
        "images_per_s": images / step_s,
        "train_samples_per_s": images * args.timesteps_per_sample / statistics.fmean(r["s"] for r in train),
        "build_s": build_s,
        "loss_finite": all(r["loss"] == r["loss"] for r in measured_rows),
    }
    if cuda:
        result["sample_peak_allocated_gb"] = max(r["peak_allocated_gb"] for r in sample)
        result["sample_peak_reserved_gb"] = max(r["peak_reserved_gb"] for r in sample)
        result["train_peak_allocated_gb"] = max(r["peak_allocated_gb"] for r in train)
        result["train_peak_reserved_gb"] = max(r["peak_reserved_gb"] for r in train)
    text = json.dumps(result, indent=2)
    print(text)
    out = args.out or (Path(os.environ["OUT"]) / "gpu_rl_trainer.json" if os.environ.get("OUT") else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
