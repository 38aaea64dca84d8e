"""The DiffusionNFT trainer end to end on tiny random diffusers pipelines (Flux t2i, Flux-Kontext
edit) with deterministic rewards: it trains, masks failures, overlaps rewards with sampling,
retires solved groups, checkpoints and resumes exactly, and makes the reward go up."""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import shutil
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from PIL import Image, ImageStat  # noqa: E402

from rationalrewards.rl.config import NFTConfig  # noqa: E402
from rationalrewards.rl.trainer import BrightnessReward, NFTTrainer, RewardUnavailableError  # noqa: E402

PROMPTS = ["a red cat", "a blue dog", "a green tree", "a yellow sun"]


@pytest.fixture(scope="module")
def tiny_flux() -> str:
    from rationalrewards.testing.tiny_pipelines import build_tiny_flux_cached

    return str(build_tiny_flux_cached(os.environ.get("RATIONALREWARDS_CACHE")))


@pytest.fixture(scope="module")
def tiny_kontext() -> str:
    from rationalrewards.testing.tiny_pipelines import build_tiny_flux_kontext_cached

    return str(build_tiny_flux_kontext_cached(os.environ.get("RATIONALREWARDS_CACHE")))


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def tiny_config(model: str, folder: Path, **changes) -> NFTConfig:
    """16x16 images, 2 Euler steps, rank-4 LoRA: a step takes a fraction of a second on a CPU."""
    folder.mkdir(parents=True, exist_ok=True)
    base = dict(
        pretrained_model=model, train_data=write_jsonl(folder / "train.jsonl", [{"prompt": p} for p in PROMPTS]),
        output_dir=str(folder / "run"), resolution=16, num_inference_steps=2, sampler="euler",
        max_sequence_length=16, group_size=4, groups_per_step=2, sample_batch_size=8, train_batch_size=8,
        timesteps_per_sample=1, lora_rank=4, lora_alpha=8, learning_rate=1e-2, max_steps=2, eval_every=0,
        save_every=0, reward_kind="brightness", report_to=["jsonl"], resume="never",
    )
    base.update(changes)
    return NFTConfig(**base)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def lora(trainer: NFTTrainer, which: str = "policy") -> dict[str, torch.Tensor]:
    params = trainer.policy if which == "policy" else trainer.old
    return {k: v.detach().clone() for k, v in params.items()}


# -- a short t2i run with evaluation and checkpoints (shared by several tests) -------------------
@pytest.fixture(scope="module")
def flux_run(tiny_flux, tmp_path_factory):
    folder = tmp_path_factory.mktemp("flux_run")
    cfg = tiny_config(tiny_flux, folder, max_steps=3, save_every=2, eval_every=2, log_samples=True,
                      eval_data=write_jsonl(folder / "eval.jsonl", [{"prompt": "a white house"}, {"prompt": "a road"}]))
    trainer = NFTTrainer(cfg, reward=BrightnessReward(), verbose=False)
    initial = lora(trainer)
    summary = trainer.train()
    yield {"cfg": cfg, "trainer": trainer, "initial": initial, "summary": summary, "run": Path(cfg.output_dir)}
    trainer.close()


def test_t2i_run_trains_the_lora_and_logs_losses_rewards_and_dimensions(flux_run):
    run, trainer = flux_run["run"], flux_run["trainer"]
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in rows)
    assert all(r["n_samples"] == 8 and r["n_valid"] == 8 and r["failure_rate"] == 0 for r in rows)
    assert all("score/brightness" in r and "parse_failure_rate" in r for r in rows)
    changed = [k for k, v in lora(trainer).items() if not torch.equal(v, flux_run["initial"][k])]
    assert changed and any(".lora_B." in k for k in changed)
    # The old (sampling) adapter trails the trained one but is no longer the initial one.
    assert any(not torch.equal(v, flux_run["initial"][k]) for k, v in lora(trainer, "old").items())
    assert flux_run["summary"]["ok"] and flux_run["summary"]["steps"] == 3


def test_evaluation_runs_before_training_and_every_eval_every_steps_with_saved_images(flux_run):
    run = flux_run["run"]
    evals = read_jsonl(run / "eval.jsonl")
    assert [e["step"] for e in evals] == [0, 2]
    assert all(e["n"] == 2 and e["weights"] == "ema" and math.isfinite(e["reward_mean"]) for e in evals)
    assert len(list((run / "eval" / "step-000002").glob("*.png"))) == 2
    assert len(read_jsonl(run / "eval" / "step-000002" / "results.jsonl")) == 2


def test_exported_lora_loads_into_the_pipeline(flux_run, tiny_flux):
    from diffusers import DiffusionPipeline

    run = flux_run["run"]
    for name in ("lora", "lora_ema"):
        assert (run / "final" / name / "pytorch_lora_weights.safetensors").is_file()
    pipe = DiffusionPipeline.from_pretrained(tiny_flux)
    pipe.load_lora_weights(str(run / "final" / "lora"))
    assert any("lora" in n for n, _ in pipe.transformer.named_parameters())


def test_killed_run_restarted_with_the_same_arguments_resumes_exactly_without_duplicates(flux_run, tmp_path):
    # Simulate a kill during step 3: its metrics line was written, its checkpoint was not.
    run = tmp_path / "run"
    shutil.copytree(flux_run["run"], run)
    shutil.rmtree(run / "checkpoints" / "step-000003")
    (run / "checkpoints" / "latest").write_text("step-000002\n")
    cfg = flux_run["cfg"].replace(output_dir=str(run), resume="auto")
    resumed = NFTTrainer(cfg, reward=BrightnessReward(), verbose=False)
    try:
        summary = resumed.train()
    finally:
        resumed.close()
    assert summary["steps"] == 3
    original = read_jsonl(flux_run["run"] / "metrics.jsonl")
    again = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in again] == [1, 2, 3]  # nothing lost, nothing duplicated
    assert again[2]["loss"] == original[2]["loss"] and again[2]["reward_mean"] == original[2]["reward_mean"]
    for which in ("policy", "old"):
        a, b = lora(flux_run["trainer"], which), lora(resumed, which)
        assert all(torch.equal(a[k], b[k]) for k in a), which
    assert all(torch.equal(flux_run["trainer"].ema[k], resumed.ema[k]) for k in resumed.ema)
    assert resumed.state.to_json() == flux_run["trainer"].state.to_json()
    assert [e["step"] for e in read_jsonl(run / "eval.jsonl")] == [0, 2]


# -- editing ----------------------------------------------------------------------------------
class SourceRecordingReward(BrightnessReward):
    def __init__(self) -> None:
        self.calls: list[dict] = []

    async def score(self, images, prompts, sources=None, group_ids=None):
        self.calls.append({"n": len(images), "sources": [s.size for s in sources], "groups": list(group_ids)})
        return await super().score(images, prompts)


def test_edit_run_groups_by_prompt_and_source_and_sends_sources_to_the_reward(tiny_kontext, tmp_path):
    Image.new("RGB", (20, 20), (200, 30, 30)).save(tmp_path / "red.png")
    Image.new("RGB", (24, 16), (30, 30, 200)).save(tmp_path / "blue.png")
    data = write_jsonl(tmp_path / "edit.jsonl", [
        {"prompt": "make it green", "source": "red.png"},
        {"prompt": "make it green", "source": "blue.png"},
        {"prompt": "add a hat", "source": "missing.png"},
    ])
    reward = SourceRecordingReward()
    cfg = tiny_config(tiny_kontext, tmp_path, train_data=data, sample_batch_size=4, train_batch_size=4,
                      sampler="heun", log_samples=True, kl_coef=0.1)
    with NFTTrainer(cfg, reward=reward, verbose=False) as trainer:
        initial = lora(trainer)
        summary = trainer.train()
    assert summary["task"] == "edit" and summary["pipeline_family"] == "flux-kontext"
    assert summary["skipped_rows"] == 1 and "missing.png" in (Path(cfg.output_dir) / "skipped_rows.jsonl").read_text()
    # One reward call per group (sample_batch_size == group_size), each with that group's source.
    assert [c["n"] for c in reward.calls] == [4, 4, 4, 4]
    assert {tuple(c["sources"]) for c in reward.calls} == {((20, 20),) * 4, ((24, 16),) * 4}
    samples = read_jsonl(Path(cfg.output_dir) / "samples.jsonl")
    groups = {s["group"] for s in samples}
    assert len(groups) == 2 and {s["prompt"] for s in samples} == {"make it green"}
    rows = read_jsonl(Path(cfg.output_dir) / "metrics.jsonl")
    assert all(math.isfinite(r["loss"]) and r["groups"] == 2 and r["kl"] >= 0 for r in rows)
    assert any(not torch.equal(v, initial[k]) for k, v in lora(trainer).items())


# -- failures, overlap, retirement ------------------------------------------------------------
class FlakyJudge(BrightnessReward):
    """Scores like brightness but fails (parse) on the first image of every group; ``dead``
    fails everything."""

    def __init__(self, dead: bool = False) -> None:
        self.dead = dead

    async def score(self, images, prompts, sources=None, group_ids=None):
        from rationalrewards.critique.schema import CritiqueResult

        out = await super().score(images, prompts)
        first = {g: i for i, g in reversed(list(enumerate(group_ids)))}
        bad = set(range(len(images))) if self.dead else set(first.values())
        crits = [CritiqueResult(task="t2i", ok=i not in bad, error="unparseable" if i in bad else None,
                                error_kind="parse" if i in bad else None) for i in range(len(images))]
        rewards = [math.nan if i in bad else r for i, r in enumerate(out["rewards"])]
        return {"rewards": rewards, "valid": [i not in bad for i in range(len(images))], "critiques": crits,
                "scores": out["scores"]}


def test_failed_rewards_are_masked_out_of_the_loss_and_counted(tiny_flux, tmp_path):
    cfg = tiny_config(tiny_flux, tmp_path)
    with NFTTrainer(cfg, reward=FlakyJudge(), verbose=False) as trainer:
        trainer.train()
    rows = read_jsonl(Path(cfg.output_dir) / "metrics.jsonl")
    for r in rows:
        assert r["n_masked"] == 2 and r["n_valid"] == 6 and r["failures/parse"] == 2
        assert r["parse_failure_rate"] == pytest.approx(0.25) and math.isfinite(r["loss"])


def test_a_judge_that_never_answers_stops_the_run_with_a_clear_error(tiny_flux, tmp_path):
    cfg = tiny_config(tiny_flux, tmp_path, max_steps=5, max_failed_steps=2)
    with NFTTrainer(cfg, reward=FlakyJudge(dead=True), verbose=False) as trainer, \
            pytest.raises(RewardUnavailableError, match="no valid reward in 2 consecutive"):
        trainer.train()


class WaitsForSampling(BrightnessReward):
    """Group 0's scoring waits until the sampler has decoded the LAST chunk: it finishes early
    only if sampling went on while the judge was busy."""

    def __init__(self) -> None:
        self.sampling_done = threading.Event()
        self.calls = 0
        self.overlapped: list[bool] = []

    async def score(self, images, prompts, sources=None, group_ids=None):
        self.calls += 1
        if self.calls == 1:
            seen = await asyncio.to_thread(self.sampling_done.wait, 20.0)
            self.overlapped.append(seen)
        return await super().score(images, prompts)


def test_rewards_are_computed_while_the_next_groups_are_sampled(tiny_flux, tmp_path):
    cfg = tiny_config(tiny_flux, tmp_path, max_steps=1, sample_batch_size=4)  # 2 chunks of one group each
    reward = WaitsForSampling()
    with NFTTrainer(cfg, reward=reward, verbose=False) as trainer:
        decode = trainer.family.decode
        calls = []

        def counting_decode(x0):
            out = decode(x0)
            calls.append(len(out))
            if len(calls) == 2:
                reward.sampling_done.set()
            return out

        trainer.family.decode = counting_decode
        trainer.train()
    assert reward.overlapped == [True]


class EasyPrompt(BrightnessReward):
    async def score(self, images, prompts, sources=None, group_ids=None):
        out = await super().score(images, prompts)
        out["rewards"] = [0.95 if p == "a red cat" else r for p, r in zip(prompts, out["rewards"], strict=True)]
        return out


def test_solved_groups_are_retired_and_never_sampled_again_even_after_resume(tiny_flux, tmp_path):
    cfg = tiny_config(tiny_flux, tmp_path, group_size=2, sample_batch_size=4, train_batch_size=4,
                      max_steps=3, save_every=3, log_samples=True)
    with NFTTrainer(cfg, reward=EasyPrompt(), verbose=False) as trainer:
        trainer.train()
        retired = set(trainer.state.retired)
    samples = read_jsonl(Path(cfg.output_dir) / "samples.jsonl")
    easy_steps = {s["step"] for s in samples if s["prompt"] == "a red cat"}
    assert len(retired) == 1 and len(easy_steps) == 1  # sampled once, solved, retired
    assert all(s["prompt"] != "a red cat" for s in samples if s["step"] > min(easy_steps))
    state = json.loads((Path(cfg.output_dir) / "checkpoints" / "step-000003" / "state.json").read_text())
    assert set(state["retired"]) == retired


# -- the judge protocol end to end ------------------------------------------------------------
def test_training_against_a_scripted_rationalrewards_judge_logs_every_dimension_and_flags_hacking(tiny_flux, tmp_path):
    from rationalrewards import RewardModel
    from rationalrewards.backends import SamplingParams
    from rationalrewards.backends.openai_http import OpenAIBackend
    from rationalrewards.rl import RationalReward
    from rationalrewards.testing.scripted_server import Reply, ScriptedServer, critique_text

    def judge(req):
        data = req.images()[-1][1]
        bright = ImageStat.Stat(Image.open(io.BytesIO(data)).convert("L")).mean[0] / 255
        text = critique_text("t2i", {"text_faithfulness": round(1 + 3 * bright, 3), "physical_quality": 3.8,
                                     "text_rendering": None})
        # A flattering score over a damning justification: the monitor must notice.
        head, _, tail = text.partition("2. Physical and Visual Quality:\n## Justification: ")
        return head + "2. Physical and Visual Quality:\n## Justification: The faces are severely distorted." \
            + tail[tail.index("\n"):]

    with ScriptedServer(judge, faults=[Reply(content="I would rather not grade this.")]) as server:
        rm = RewardModel(OpenAIBackend(server.base_url, "judge", backoff_base=0.01, backoff_max=0.02),
                         sampling=SamplingParams(temperature=0.1, max_tokens=512, seed=1))
        reward = RationalReward(rm, failure_policy="mask")
        cfg = tiny_config(tiny_flux, tmp_path, max_steps=1)
        with NFTTrainer(cfg, reward=reward, verbose=False) as trainer:
            trainer.train()
        rm.close()
    (row,) = read_jsonl(Path(cfg.output_dir) / "metrics.jsonl")
    assert row["n_masked"] == 1 and row["parse_failure_rate"] == pytest.approx(1 / 8)
    assert 1 <= row["score/text_faithfulness"] <= 4 and row["score/physical_quality"] == pytest.approx(3.8)
    assert math.isfinite(row["loss"]) and 0 < row["reward_mean"] < 1
    assert row["monitor/justification_flags"] == 7
    flags = read_jsonl(Path(cfg.output_dir) / "flags.jsonl")
    assert flags and all(f["kind"] == "justification" and f["dimension"] == "physical_quality" for f in flags)


# -- learning ---------------------------------------------------------------------------------
def test_a_slightly_longer_run_makes_the_reward_go_up(tiny_flux, tmp_path):
    cfg = tiny_config(tiny_flux, tmp_path, group_size=8, sample_batch_size=16, train_batch_size=16,
                      learning_rate=2e-2, max_steps=14)
    with NFTTrainer(cfg, reward=BrightnessReward(), verbose=False) as trainer:
        trainer.train()
    rewards = [r["reward_mean"] for r in read_jsonl(Path(cfg.output_dir) / "metrics.jsonl")]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    # Within-step spread is ~0.004 on this tiny VAE; the trained policy gains several times that.
    assert last > first + 0.01, rewards


def test_sd3_pipelines_train_through_the_same_trainer(tmp_path):
    from rationalrewards.testing.tiny_pipelines_rl import build_tiny_sd3_cached

    model = str(build_tiny_sd3_cached(os.environ.get("RATIONALREWARDS_CACHE")))
    cfg = tiny_config(model, tmp_path, resolution=8, max_steps=1, timestep_sampling="logit-normal")
    with NFTTrainer(cfg, reward=BrightnessReward(), verbose=False) as trainer:
        initial = lora(trainer)
        summary = trainer.train()
    assert summary["pipeline_family"] == "sd3" and math.isfinite(summary["last"]["loss"])
    assert any(not torch.equal(v, initial[k]) for k, v in lora(trainer).items())
