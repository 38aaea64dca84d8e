"""DiffusionNFT trainer step time on CPU, and what overlapping the judge with sampling saves.

A tiny random FLUX pipeline (16x16 images, 2 Euler steps) is trained with the brightness reward
behind a simulated judge that answers each call after ``--latency`` seconds (the reward server
of a real run). Two modes, same work:

* ``overlapped``: the trainer as shipped; a group's images go to the judge as soon as they are
  decoded, and sampling continues;
* ``blocking``: the same reward behind a wrapper whose ``submit`` waits for the answer, i.e.
  a trainer that calls the judge synchronously after each sampled batch.

Prints per-phase times (sampling, waiting for rewards, training), the step time of each mode,
and the ratio of the phase overlapping changes (sampling + waiting for the judge), all measured
in this run. On a shared machine the training phase is noisy; the judge-bound phase is not.

    .venv/bin/python bench/bench_rl_trainer.py [--steps 4] [--latency 0.3] [--groups 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from rationalrewards.rl.config import NFTConfig
from rationalrewards.rl.trainer import BrightnessReward, NFTTrainer
from rationalrewards.testing.tiny_pipelines import build_tiny_flux_cached

PROMPTS = ["a red cat", "a blue dog", "a green tree", "a yellow sun", "a white house", "a dark road",
           "a small bird", "a tall building"]


class SlowJudge(BrightnessReward):
    """Brightness, answered after ``latency`` seconds per call (like a remote judge)."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.calls = 0

    async def score(self, images: Any, prompts: Any, sources: Any = None, group_ids: Any = None) -> dict[str, Any]:
        self.calls += 1
        await asyncio.sleep(self.latency)
        return await super().score(images, prompts)


class Blocking:
    """Wraps a reward so that every submit waits for its result (a synchronous trainer)."""

    def __init__(self, inner: SlowJudge) -> None:
        self.inner = inner

    def submit(self, images: Any, prompts: Any, sources: Any = None, group_ids: Any = None) -> Future[Any]:
        fut: Future[Any] = Future()
        fut.set_result(asyncio.run(self.inner.score(images, prompts, sources, group_ids)))
        return fut


def run(mode: str, args: argparse.Namespace, folder: Path) -> dict[str, float]:
    model = str(build_tiny_flux_cached())
    data = folder / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    cfg = NFTConfig(
        pretrained_model=model, train_data=str(data), output_dir=str(folder / mode), resolution=16,
        num_inference_steps=2, sampler="euler", max_sequence_length=16, group_size=args.group_size,
        groups_per_step=args.groups, sample_batch_size=args.group_size, train_batch_size=args.group_size * 2,
        timesteps_per_sample=2, lora_rank=8, lora_alpha=16, learning_rate=1e-3, max_steps=args.steps + 1,
        eval_every=0, save_every=0, report_to=["jsonl"], resume="never", reward_kind="brightness",
    )
    judge = SlowJudge(args.latency)
    reward: Any = judge if mode == "overlapped" else Blocking(judge)
    with NFTTrainer(cfg, reward=reward, verbose=False) as trainer:
        trainer.train()
    rows = [json.loads(line) for line in (folder / mode / "metrics.jsonl").read_text().splitlines()][1:]  # skip warm-up
    out = {k: statistics.fmean(r[f"time/{k}"] for r in rows) for k in ("sample_s", "reward_wait_s", "train_s", "step_s")}
    out["generate_and_judge_s"] = out["sample_s"] + out["reward_wait_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="measured iterations per mode (after one warm-up)")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds the simulated judge takes per call")
    parser.add_argument("--groups", type=int, default=4, help="prompt groups per iteration (one judge call each)")
    parser.add_argument("--group-size", type=int, default=4)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = {mode: run(mode, args, Path(tmp)) for mode in ("overlapped", "blocking")}
    print(f"tiny FLUX, 16x16, 2 Euler steps, {args.groups} groups x {args.group_size} images per step, "
          f"judge latency {args.latency:.2f}s per group call, mean of {args.steps} steps")
    print(f"{'mode':<11} {'sample s':>9} {'wait s':>8} {'sample+wait s':>14} {'train s':>8} {'step s':>8}")
    for mode, r in results.items():
        print(f"{mode:<11} {r['sample_s']:9.3f} {r['reward_wait_s']:8.3f} {r['generate_and_judge_s']:14.3f} "
              f"{r['train_s']:8.3f} {r['step_s']:8.3f}")
    ratio = results["blocking"]["generate_and_judge_s"] / results["overlapped"]["generate_and_judge_s"]
    ideal = (results["overlapped"]["sample_s"] + args.groups * args.latency) / results["overlapped"]["generate_and_judge_s"]
    print(f"sample+wait, blocking / overlapped: {ratio:.2f}x (sampling time + {args.groups} x latency would give {ideal:.2f}x)")
    print(f"step time, blocking / overlapped: {results['blocking']['step_s'] / results['overlapped']['step_s']:.2f}x")
    print(json.dumps({"results": results, "ratio_generate_and_judge": ratio, "args": vars(args)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
