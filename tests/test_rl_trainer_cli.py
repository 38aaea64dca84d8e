"""``rationalrewards rl train``: config validation, dry runs, exit codes and a real tiny run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from rationalrewards.rl.train_cli import register_train


@pytest.fixture
def cli() -> typer.Typer:
    """A stand-in for the ``rl`` sub-command the stage's cli.py builds."""
    app = typer.Typer(no_args_is_help=True)
    register_train(app)

    @app.callback()
    def _rl() -> None:  # a callback keeps "train" a named sub-command
        """RL commands."""

    return app


def write_config(folder: Path, **fields) -> Path:
    (folder / "prompts.jsonl").write_text('{"prompt": "a red cat"}\n{"prompt": "a blue dog"}\n')
    data = {"pretrained_model": "some/model", "train_data": "prompts.jsonl", "output_dir": "run",
            "reward_kind": "brightness", **fields}
    path = folder / "run.yaml"
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in data.items()))
    return path


def test_help_lists_the_options(cli):
    result = CliRunner().invoke(cli, ["train", "--help"])
    assert result.exit_code == 0
    for flag in ("--config", "--set", "--output-dir", "--max-steps", "--resume", "--dry-run", "--json"):
        assert flag in result.output


def test_dry_run_prints_the_resolved_config_without_loading_anything(cli, tmp_path):
    cfg = write_config(tmp_path)
    result = CliRunner().invoke(cli, ["train", "--config", str(cfg), "--set", "max_steps=9", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    resolved = json.loads(result.stdout)
    assert resolved["max_steps"] == 9
    assert resolved["train_data"] == str((tmp_path / "prompts.jsonl").resolve())
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("fields", "args", "message"),
    [({"group_sise": 4}, [], "did you mean 'group_size'"),
     ({}, ["--set", "sampler=ddim"], "sampler"),
     ({"reward_kind": "judge"}, [], "reward_base_url"),
     ({"pretrained_model": ""}, [], "pretrained_model")],
)
def test_bad_configs_exit_2_naming_the_field(cli, tmp_path, fields, args, message):
    cfg = write_config(tmp_path, **fields)
    result = CliRunner().invoke(cli, ["train", "--config", str(cfg), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_missing_config_file_exits_2(cli, tmp_path):
    result = CliRunner().invoke(cli, ["train", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "not found" in result.output


def test_a_tiny_run_from_the_command_line(cli, tmp_path):
    pytest.importorskip("diffusers")
    from rationalrewards.testing.tiny_pipelines import build_tiny_flux_cached

    model = build_tiny_flux_cached(os.environ.get("RATIONALREWARDS_CACHE"))
    cfg = write_config(tmp_path, pretrained_model=str(model), resolution=16, num_inference_steps=1, sampler="euler",
                       max_sequence_length=16, group_size=2, groups_per_step=2, sample_batch_size=4,
                       train_batch_size=4, timesteps_per_sample=1, lora_rank=2, lora_alpha=4, eval_every=0,
                       save_every=0, report_to=["jsonl"])
    out = tmp_path / "elsewhere"
    result = CliRunner().invoke(cli, ["train", "--config", str(cfg), "--max-steps", "1", "--output-dir", str(out),
                                      "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ok"] and summary["steps"] == 1 and summary["output_dir"] == str(out.resolve())
    assert (out / "checkpoints" / "step-000001" / "state.json").is_file()
    assert (out / "summary.json").is_file() and (out / "config.yaml").is_file()


def test_gpu_benchmark_script_runs_on_cpu_with_tiny(tmp_path):
    pytest.importorskip("diffusers")
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "gpu_rl_trainer.py"
    spec = importlib.util.spec_from_file_location("gpu_rl_trainer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "result.json"
    assert module.main(["--tiny", "--steps", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["measured_steps"] == 1 and result["loss_finite"]
    assert result["step_s"] > 0 and result["lora_params"] > 0
