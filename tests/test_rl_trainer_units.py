"""DiffusionNFT trainer pieces without a pipeline: advantages, the objective, the sampler, the
config, the reward-hacking monitor, reward normalisation and the prompt data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rationalrewards.rl import nft
from rationalrewards.rl.config import ConfigError, NFTConfig, parse_overrides
from rationalrewards.rl.monitor import RewardHackingMonitor, fitted_change, severe_mentions

NAN = float("nan")


# -- advantages ---------------------------------------------------------------------------------
def test_advantages_are_centred_per_group_and_scaled_by_the_global_std():
    rewards = [0.2, 0.4, 0.6, 0.8]
    adv = nft.group_advantages(rewards, ["a", "a", "b", "b"], std="global", eps=0.0)
    global_std = math.sqrt(sum((r - 0.5) ** 2 for r in rewards) / 4)
    assert adv == pytest.approx([-0.1 / global_std, 0.1 / global_std, -0.1 / global_std, 0.1 / global_std])


def test_per_group_std_uses_each_groups_own_spread():
    adv = nft.group_advantages([0.0, 1.0, 0.4, 0.6], ["a", "a", "b", "b"], std="group", eps=0.0)
    # Both groups become +-1 whatever their spread.
    assert adv == pytest.approx([-1.0, 1.0, -1.0, 1.0])


def test_groups_are_keys_not_prompt_text():
    # Same prompt, two different source images: two groups, each centred on its own mean.
    keys = [("make it red", "src1"), ("make it red", "src1"), ("make it red", "src2"), ("make it red", "src2")]
    adv = nft.group_advantages([0.9, 0.9, 0.1, 0.1], keys, std="global")
    assert adv == [0.0, 0.0, 0.0, 0.0]


def test_missing_rewards_are_masked_and_take_no_part_in_statistics():
    adv = nft.group_advantages([0.2, NAN, 0.6, 0.5, NAN], ["a", "a", "a", "b", "b"], std="group", eps=0.0)
    assert math.isnan(adv[1]) and math.isnan(adv[4])
    assert adv[0] == pytest.approx(-1.0) and adv[2] == pytest.approx(1.0)
    assert adv[3] == 0.0  # a group with one valid reward has nothing to be compared with


def test_advantages_are_clipped_and_equal_rewards_give_exactly_zero():
    adv = nft.group_advantages([0.0] * 9 + [1.0, 0.3, 0.3], ["a"] * 10 + ["b", "b"], std="global", clip=2.0)
    assert max(adv) == 2.0 and adv[-2:] == [0.0, 0.0]


def test_optimality_maps_advantages_into_unit_interval():
    assert nft.optimality([0.0, 5.0, -5.0, 10.0, 2.5], adv_clip_max=5.0) == [0.5, 1.0, 0.0, 1.0, 0.75]
    assert math.isnan(nft.optimality([NAN])[0])


def test_solved_groups_need_low_std_high_mean_and_no_failures():
    rewards = [0.95, 0.96, 0.5, 0.9, 0.97, NAN, 0.99]
    keys = ["solved", "solved", "mixed", "mixed", "easy-but-one-failed", "easy-but-one-failed", "single"]
    assert nft.solved_groups(rewards, keys, max_std=0.05, min_mean=0.9) == ["solved"]


# -- the objective --------------------------------------------------------------------------------
def _batch(b=3, d=5, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    x0, noise = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    v_old = torch.randn(b, d, generator=g)
    v = (v_old + 0.1 * torch.randn(b, d, generator=g)).requires_grad_(True)
    sigma = torch.tensor([0.2, 0.5, 0.9])[:b]
    return x0, noise, v_old, v, sigma


def test_velocity_loss_is_the_optimality_weighted_implicit_policy_regression():
    import torch

    x0, noise, v_old, v, sigma = _batch()
    r = torch.tensor([1.0, 0.0, 0.25])
    beta = 0.5
    out = nft.nft_loss(v, v_old, x0, noise, sigma, r, beta=beta, weighting="velocity")
    target = noise - x0
    pos = (((1 - beta) * v_old + beta * v - target) ** 2).mean(1)
    neg = (((1 + beta) * v_old - beta * v - target) ** 2).mean(1)
    expected = ((r * pos + (1 - r) * neg) / beta).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert out.n_used == 3


def test_adaptive_weighting_is_the_self_normalised_x0_error():
    import torch

    x0, noise, v_old, v, sigma = _batch()
    r = torch.tensor([0.7, 0.7, 0.7])
    out = nft.nft_loss(v, v_old, x0, noise, sigma, r, beta=1.0, weighting="adaptive")
    x_t = (1 - sigma[:, None]) * x0 + sigma[:, None] * noise
    x0_pos = x_t - sigma[:, None] * v  # beta = 1: v+ = v
    x0_neg = x_t - sigma[:, None] * (2 * v_old - v)
    pos = ((x0_pos - x0) ** 2).mean(1) / (x0_pos - x0).abs().mean(1)
    neg = ((x0_neg - x0) ** 2).mean(1) / (x0_neg - x0).abs().mean(1)
    assert out.loss.item() == pytest.approx((0.7 * pos + 0.3 * neg).mean().item(), rel=1e-5)


def test_positive_samples_pull_the_policy_towards_their_data_and_negatives_push_away():
    import torch

    x0, noise, v_old, _, sigma = _batch()
    target = noise - x0
    for r_value, sign in ((1.0, +1), (0.0, -1)):
        v = v_old.clone().requires_grad_(True)
        nft.nft_loss(v, v_old, x0, noise, sigma, torch.full((3,), r_value), weighting="velocity").loss.backward()
        # One gradient step moves v along sign * (target - v_old).
        assert sign * torch.sum(-v.grad * (target - v_old)).item() > 0


def test_masked_and_nan_samples_are_left_out_and_no_sample_gives_a_zero_loss_with_a_graph():
    import torch

    x0, noise, v_old, v, sigma = _batch()
    one = nft.nft_loss(v[:1], v_old[:1], x0[:1], noise[:1], sigma[:1], torch.tensor([0.8]))
    masked = nft.nft_loss(v, v_old, x0, noise, sigma, torch.tensor([0.8, NAN, 0.3]),
                          mask=torch.tensor([True, True, False]))
    assert masked.n_used == 1 and masked.loss.item() == pytest.approx(one.loss.item(), rel=1e-6)
    none = nft.nft_loss(v, v_old, x0, noise, sigma, torch.tensor([NAN, NAN, NAN]))
    assert none.n_used == 0 and none.loss.item() == 0.0
    none.loss.backward()  # still differentiable (every process of a distributed step takes part)
    assert v.grad is not None and torch.count_nonzero(v.grad) == 0


def test_kl_term_pulls_towards_the_reference_model():
    import torch

    x0, noise, v_old, v, sigma = _batch()
    v_ref = torch.zeros_like(v_old)
    r = torch.full((3,), 0.5)
    base = nft.nft_loss(v, v_old, x0, noise, sigma, r)
    with_kl = nft.nft_loss(v, v_old, x0, noise, sigma, r, v_ref=v_ref, kl_coef=0.3)
    kl = (v.detach() ** 2).mean(1).mean().item()
    assert with_kl.kl == pytest.approx(kl, rel=1e-5)
    assert with_kl.loss.item() == pytest.approx(base.loss.item() + 0.3 * kl, rel=1e-5)


def test_train_sigmas_stay_inside_the_open_interval_and_follow_the_shift():
    import torch

    g = torch.Generator().manual_seed(0)
    s = nft.sample_train_sigmas(1000, g, t_min=0.0, t_max=1.0)
    assert s.min() >= 1e-3 and s.max() <= 1 - 1e-3
    shifted = nft.sample_train_sigmas(1000, torch.Generator().manual_seed(0), shift=lambda u: 3 * u / (1 + 2 * u))
    assert shifted.mean() > s.mean()  # a shift > 1 spends more time at high noise


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_ode_sampler_follows_straight_flows_exactly(sampler):
    import torch

    x0 = torch.tensor([[0.5, -1.0, 2.0]])
    eps = torch.tensor([[1.0, 1.0, -1.0]])

    def velocity(x, sigma):  # the exact field of a single data point: (x - x0) / sigma
        return (x - x0) / sigma

    out = nft.ode_sample(velocity, eps, torch.tensor([1.0, 0.6, 0.3, 0.0]), sampler=sampler)
    assert torch.allclose(out, x0, atol=1e-6)


def test_ema_and_copy_helpers():
    import torch

    target = {"a": torch.ones(2)}
    nft.lerp_into(target, {"a": torch.zeros(2)}, 0.75)
    assert torch.allclose(target["a"], torch.full((2,), 0.75))
    nft.lerp_into(target, {"a": torch.full((2,), 3.0)}, 0.0)  # decay 0: plain copy
    assert torch.equal(target["a"], torch.full((2,), 3.0))
    with pytest.raises(ValueError, match="adapter keys differ"):
        nft.copy_into(target, {"b": torch.zeros(2)})


def test_old_policy_decay_schedule():
    cfg = NFTConfig(old_decay_flat_steps=2, old_decay_rate=0.1, old_decay_max=0.25)
    assert [cfg.old_decay(s) for s in range(6)] == [0.0, 0.0, 0.0, pytest.approx(0.1), 0.2, 0.25]


# -- config ---------------------------------------------------------------------------------------
def test_config_from_yaml_resolves_paths_against_the_file_and_applies_overrides(tmp_path: Path):
    (tmp_path / "data").mkdir()
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("pretrained_model: hub/model-id\ntrain_data: data/train.jsonl\noutput_dir: out\n"
                        "learning_rate: 1e-4\nreport_to: jsonl\n")
    cfg = NFTConfig.from_yaml(cfg_file, overrides=["max_steps=7", "kl_coef=0.01"])
    assert cfg.train_data == str((tmp_path / "data" / "train.jsonl").resolve())
    assert cfg.output_dir == str((tmp_path / "out").resolve())
    assert cfg.pretrained_model == "hub/model-id"  # not a local folder: left as a hub id
    assert cfg.learning_rate == 1e-4 and cfg.max_steps == 7 and cfg.kl_coef == 0.01
    assert cfg.report_to == ["jsonl"]


def test_config_refuses_unknown_fields_with_a_suggestion(tmp_path: Path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("group_sise: 4\n")
    with pytest.raises(ConfigError, match="did you mean 'group_size'"):
        NFTConfig.from_yaml(cfg_file)


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"sampler": "ddim"}, "sampler"), ({"group_size": 0}, "group_size"), ({"nft_beta": 0.0}, "nft_beta"),
     ({"ema_decay": 1.0}, "ema_decay"), ({"adv_std": "batch"}, "adv_std"),
     ({"group_size": 3, "sample_batch_size": 4}, "sample_batch_size")],
)
def test_config_validation_names_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        NFTConfig(**changes)


def test_required_fields_and_reward_backend_are_checked():
    with pytest.raises(ConfigError, match="pretrained_model"):
        NFTConfig().check_required()
    cfg = NFTConfig(pretrained_model="m", train_data="t.jsonl", output_dir="o", reward_kind="judge")
    with pytest.raises(ConfigError, match="reward_base_url"):
        cfg.check_required()
    NFTConfig(pretrained_model="m", train_data="t.jsonl", output_dir="o", reward_kind="brightness").check_required()


def test_overrides_parse_values_as_yaml():
    assert parse_overrides(["a=1", "b=[x, y]", "c=null", "d=text"]) == {"a": 1, "b": ["x", "y"], "c": None, "d": "text"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])


def test_example_configs_are_valid():
    examples = sorted((Path(__file__).resolve().parents[1] / "examples").glob("rl_*.yaml"))
    assert examples, "examples/rl_*.yaml should exist"
    for path in examples:
        NFTConfig.from_yaml(path).check_required()


# -- monitor --------------------------------------------------------------------------------------
def test_fitted_change_sees_the_trend_through_noise():
    assert fitted_change([0.0, 0.1, 0.2, 0.3]) == pytest.approx(0.3)
    assert fitted_change([0.5, 0.5]) == 0.0
    assert fitted_change([0.2, NAN, 0.4]) == pytest.approx(0.2)


def test_monitor_flags_a_rising_reward_with_a_falling_dimension_once_per_episode():
    mon = RewardHackingMonitor(window=4, min_change=0.02)
    flags = []
    for step in range(8):
        reward = 0.5 + 0.02 * step
        dims = {"physical_quality": 3.5 + 0.05 * step, "text_faithfulness": 3.5 - 0.06 * step}
        flags += mon.observe(step, reward, dims)
    assert [(f.kind, f.dimension) for f in flags] == [("trend", "text_faithfulness")]
    # The condition clears, then holds again: a new flag.
    for step in range(8, 12):
        flags += mon.observe(step, 0.66, {"text_faithfulness": 3.0})
    for step in range(12, 16):
        flags += mon.observe(step, 0.66 + 0.05 * (step - 11), {"text_faithfulness": 3.0 - 0.2 * (step - 11)})
    assert len([f for f in flags if f.dimension == "text_faithfulness"]) == 2


def test_monitor_stays_quiet_when_everything_improves_together():
    mon = RewardHackingMonitor(window=4)
    flags = [f for s in range(10) for f in mon.observe(s, 0.4 + 0.03 * s, {"text_faithfulness": 2 + 0.1 * s})]
    assert flags == []


def test_severe_mentions_ignore_negated_phrases():
    assert severe_mentions("The hand is severely distorted and the sign is garbled.", ["severely", "distorted", "garbled"]) \
        == ["distorted", "severely", "garbled"]
    assert severe_mentions("No severe artifacts; nothing is missing.", ["severe", "missing"]) == []
    assert severe_mentions("Not distorted, but the dog is missing.", ["distorted", "missing"]) == ["missing"]


def test_monitor_flags_high_scores_with_justifications_listing_severe_flaws():
    from rationalrewards.critique.schema import CritiqueResult

    crit = CritiqueResult(task="t2i", ok=True, scores={"text_faithfulness": 3.8, "physical_quality": 3.9},
                          justifications={"text_faithfulness": "The requested cat is missing entirely.",
                                          "physical_quality": "Crisp, with no severe artifacts."})
    low = CritiqueResult(task="t2i", ok=True, scores={"text_faithfulness": 1.5},
                         justifications={"text_faithfulness": "The cat is missing."})
    failed = CritiqueResult(task="t2i", ok=False, error="parse", error_kind="parse")
    flags, total = RewardHackingMonitor().check_critiques(3, [crit, low, failed], prompts=["a cat"] * 3)
    assert total == 1
    assert flags[0].dimension == "text_faithfulness" and flags[0].details["keywords"] == ["missing"]
    assert flags[0].details["prompt"] == "a cat" and flags[0].step == 3


def test_monitor_state_round_trips():
    mon = RewardHackingMonitor(window=3)
    for s in range(3):
        mon.observe(s, 0.1 * s, {"text_faithfulness": 3 - 0.5 * s})
    clone = RewardHackingMonitor(window=3)
    clone.load_state_dict(json.loads(json.dumps(mon.state_dict())))
    assert clone.history == mon.history and clone.active == mon.active


# -- rewards and data -----------------------------------------------------------------------------
def test_scored_batch_accepts_reward_batches_dicts_and_plain_lists():
    from rationalrewards.rl.rewarding import ScoredBatch

    class Batch:
        rewards = [0.1, 0.5, 0.7]
        valid = [True, False, True]  # a filled failure is still invalid: the trainer masks it
        scores = {"text_faithfulness": [1.3, NAN, 3.1]}
        base_rewards = [0.1, NAN, 0.7]

        def failure_kinds(self):
            return [None, "parse", None]

    sb = ScoredBatch.from_result(Batch(), 3)
    assert math.isnan(sb.rewards[1]) and sb.valid == [True, False, True]
    assert sb.failure_kinds == [None, "parse", None] and sb.scores["text_faithfulness"][2] == 3.1
    plain = ScoredBatch.from_result([0.2, NAN], 2)
    assert plain.valid == [True, False] and plain.failure_kinds == [None, "invalid"]
    with pytest.raises(ValueError, match="2 values for 3 images"):
        ScoredBatch.from_result({"rewards": [0.1, 0.2]}, 3)


def test_prompt_rows_key_edits_by_source_content_and_skip_bad_rows(tmp_path: Path):
    from PIL import Image

    from rationalrewards.io import InputFileError
    from rationalrewards.rl.data import load_prompt_rows

    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "b.png")
    (tmp_path / "c.png").write_bytes(Image.new("RGB", (8, 8), "red").tobytes()[:10])  # not an image
    rows = [{"prompt": "make it green", "source": "a.png"}, {"prompt": "make it green", "source": "b.png"},
            {"prompt": "make it green", "image_path": "a.png", "id": "dup-content"},
            {"prompt": "x", "source": "c.png"}, {"prompt": "", "source": "a.png"}, {"prompt": "y"}]
    path = tmp_path / "edit.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    good, skipped = load_prompt_rows(path, task="edit")
    assert [r.id for r in good] == ["line-1", "line-2", "dup-content"]
    assert good[0].key != good[1].key  # same instruction, different source: different groups
    assert good[0].key == good[2].key  # same instruction and same source content: one group
    reasons = {s["id"]: s["reason"] for s in skipped}
    assert "unreadable source image" in reasons["line-4"] and "prompt" in reasons["line-5"]
    assert "source image" in reasons["line-6"]
    t2i, _ = load_prompt_rows(path, task="t2i")
    assert len({r.key for r in t2i}) == 3  # t2i groups are keyed by prompt only
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "z", "source": "nope.png"}) + "\n")
    with pytest.raises(InputFileError, match="no usable prompt rows"):
        load_prompt_rows(bad, task="edit")
