"""``rl train`` under ``accelerate launch`` with the FSDP config of examples/: the configuration
loads and LoRA steps run and checkpoint in one CPU process.

accelerate applies FSDP only on accelerators (on CPU it runs the process undistributed), so this
checks the launch path and that the trainer says sharding is off rather than pretending; sharded
multi-GPU runs need a GPU machine (docs/rl_trainer.md, "Multi-GPU")."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")
pytest.importorskip("diffusers")

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_fsdp_config_launches_and_one_cpu_process_trains_and_checkpoints(tmp_path):
    from safetensors.torch import load_file

    from rationalrewards.testing.tiny_pipelines import build_tiny_flux_cached

    model = build_tiny_flux_cached(os.environ.get("RATIONALREWARDS_CACHE"))
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("a red cat", "a dog")))
    (tmp_path / "cfg.yaml").write_text("\n".join([
        f"pretrained_model: {model}", "train_data: train.jsonl", "output_dir: run", "resolution: 16",
        "num_inference_steps: 2", "sampler: euler", "max_sequence_length: 16", "group_size: 2",
        "groups_per_step: 2", "sample_batch_size: 4", "train_batch_size: 4", "timesteps_per_sample: 1",
        "lora_rank: 2", "lora_alpha: 4", "learning_rate: 0.01", "max_steps: 2", "save_every: 1",
        "eval_every: 0", "reward_kind: brightness", "report_to: [jsonl]", "resume: never", "",
    ]))
    # The example file with only the machine changed: one CPU process (flags such as --cpu make
    # accelerate's simple launcher drop the FSDP settings, so the file itself is edited).
    acc = yaml.safe_load((ROOT / "examples" / "accelerate_fsdp.yaml").read_text())
    assert acc["distributed_type"] == "FSDP" and acc["fsdp_config"]["fsdp_use_orig_params"] is True
    acc.update(use_cpu=True, num_processes=1, mixed_precision="no", main_process_ip="127.0.0.1",
               main_process_port=free_port())
    acc["fsdp_config"]["fsdp_sync_module_states"] = False  # accelerate refuses it on CPU
    (tmp_path / "accelerate.yaml").write_text(yaml.safe_dump(acc))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "accelerate.yaml"),
           "-m", "rationalrewards.cli.main", "rl", "train", "--config", str(tmp_path / "cfg.yaml")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_processes"] == 1 and summary["steps"] == 2
    assert summary["distributed_type"] == "NO"
    assert any(n.startswith("FSDP was requested but accelerate runs this process as NO") for n in summary["notes"])
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] == r["loss"] for r in rows)
    assert (tmp_path / "run" / "checkpoints" / "step-000002" / "optimizer.safetensors").is_file()
    # PEFT starts every LoRA B at zero: non-zero B matrices mean the optimiser stepped.
    lora = load_file(str(tmp_path / "run" / "final" / "lora" / "pytorch_lora_weights.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in lora.items())
