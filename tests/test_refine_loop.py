"""The Generate-Critique-Refine loop, with a steerable toy generator and a scripted critic.

The toy generator paints grey images whose brightness rises with every "brighter" in the request;
the scripted critic (a real local OpenAI-compatible server) rewards brightness (reward = mean
brightness) and proposes one more "brighter" than it sees. So the reward can only climb if the
critic's refined request reaches the generator, and every assertion below is about plumbing.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from rationalrewards import RewardModel
from rationalrewards.backends.openai_http import OpenAIBackend
from rationalrewards.refine import (
    CallableGenerator,
    RefineConfig,
    RefineInputError,
    RefineLoop,
    Refiner,
    load_trajectory,
    refine,
)
from rationalrewards.refine.refiner import anchor_request, intent_overlap, parse_refiner_answer
from rationalrewards.refine.toy import inverted_generator, toy_generator
from rationalrewards.testing.judges import toy_critic
from rationalrewards.testing.scripted_server import Reply, ScriptedServer

PROMPT = "a grey square"


def critic_for(server: ScriptedServer) -> RewardModel:
    return RewardModel(OpenAIBackend(server.base_url, "critic", backoff_base=0.01, backoff_max=0.02, max_retries=1))


def chat_requests(server: ScriptedServer) -> list:
    return [r for r in server.requests if r.path == "/v1/chat/completions"]


class CountingGenerator(CallableGenerator):
    """The toy generator, counting images and remembering every call."""

    def __init__(self, fn=toy_generator):
        super().__init__(fn, label="toy")
        self.calls: list[tuple[str, int, int]] = []

    def generate(self, request, *, source=None, seed=0, n=1):
        self.calls.append((request, seed, n))
        return super().generate(request, source=source, seed=seed, n=n)

    @property
    def images(self) -> int:
        return sum(n for _, _, n in self.calls)


async def run(server, tmp_path, config, gen=None, prompt=PROMPT, **kw):
    gen = gen or CountingGenerator()
    critic = critic_for(server)
    try:
        traj = await RefineLoop(gen, critic, config, **{k: v for k, v in kw.items() if k == "refiner"}).arun(
            prompt, tmp_path / "out", **{k: v for k, v in kw.items() if k != "refiner"})
    finally:
        await critic.aclose()
    return traj, gen


# ------------------------------------------------------------------------------------------------
# steering, scoring against the original, acceptance
# ------------------------------------------------------------------------------------------------


async def test_refined_requests_steer_the_generator_and_the_reward_climbs_to_the_threshold(tmp_path):
    with ScriptedServer(toy_critic()) as server:
        traj, gen = await run(server, tmp_path, RefineConfig(rounds=6, candidates=2, threshold=0.7, patience=2))
    rewards = [r.round_best_reward for r in traj.rounds]
    assert rewards == sorted(rewards) and rewards[-1] >= 0.7 > rewards[-2]
    assert [r.accepted for r in traj.rounds] == [True] * len(traj.rounds)
    assert traj.stop_reason == "threshold" and traj.finished and traj.ok
    assert traj.rounds[0].request == PROMPT and traj.rounds[0].request_source == "original"
    assert traj.rounds[1].request == PROMPT + ", brighter" and traj.rounds[1].request_source == "critique"
    assert traj.rounds[1].parent == {"round": 0, "candidate": traj.rounds[0].round_best}
    assert traj.best.round == len(traj.rounds) - 1 and traj.best.request == traj.rounds[-1].request
    assert traj.best.reward == pytest.approx(rewards[-1])
    assert gen.images == 2 * len(traj.rounds) == traj.usage.generator_calls


async def test_every_image_is_critiqued_against_the_original_request_never_the_refined_one(tmp_path):
    with ScriptedServer(toy_critic()) as server:
        traj, _ = await run(server, tmp_path, RefineConfig(rounds=3, candidates=2, threshold=None, patience=None))
        reqs = chat_requests(server)
    assert len(reqs) == traj.usage.critic_calls == 8
    for req in reqs:
        user = req.text("user")
        assert f"User Instruction: {PROMPT}\n" in user + "\n"
        assert "brighter" not in user
    assert any("brighter" in r.request for r in traj.rounds[1:])


async def test_a_revision_is_accepted_only_when_it_beats_the_best_so_far(tmp_path):
    # "brighter" makes this generator darker: every refined round scores worse than round 0.
    with ScriptedServer(toy_critic()) as server:
        traj, _ = await run(server, tmp_path, RefineConfig(rounds=3, candidates=1, threshold=None, patience=None),
                            gen=CountingGenerator(inverted_generator))
    assert [r.accepted for r in traj.rounds] == [True, False, False, False]
    assert all(r.round_best_reward < traj.rounds[0].round_best_reward for r in traj.rounds[1:])
    assert all(r.decision.startswith("no improvement") for r in traj.rounds[1:])
    assert traj.best.round == 0 and traj.best.request == PROMPT
    assert traj.stop_reason == "rounds"


async def test_min_improvement_demands_a_margin(tmp_path):
    with ScriptedServer(toy_critic()) as server:
        traj, _ = await run(server, tmp_path, RefineConfig(rounds=1, candidates=1, threshold=None, min_improvement=0.5))
    assert traj.rounds[1].round_best_reward > traj.rounds[0].round_best_reward
    assert not traj.rounds[1].accepted and "+ 0.5" in traj.rounds[1].decision


async def test_pairwise_confirmation_can_veto_a_pointwise_improvement(tmp_path):
    with ScriptedServer(toy_critic(pairwise_winner="B")) as server:
        traj, _ = await run(server, tmp_path, RefineConfig(rounds=2, candidates=1, threshold=None, patience=None,
                                                           confirm_pairwise=True))
        pair_reqs = [r for r in chat_requests(server) if "Image A" in r.text("user")]
    assert [r.accepted for r in traj.rounds] == [True, False, False]
    assert traj.rounds[1].comparison["winner"] == "B" and "pairwise confirmation" in traj.rounds[1].decision
    assert len(pair_reqs) == 2 and all(f"User Instruction: {PROMPT}" in r.text("user") for r in pair_reqs)
    # One confirmation per improving round is counted as a critic call.
    assert traj.usage.critic_calls == 3 + 2


async def test_pairwise_confirmation_accepts_when_the_new_image_wins_in_both_orders(tmp_path):
    with ScriptedServer(toy_critic()) as server:
        traj, _ = await run(server, tmp_path, RefineConfig(rounds=1, candidates=1, threshold=None, confirm_pairwise=True,
                                                           confirm_swap=True))
    assert traj.rounds[1].accepted and traj.rounds[1].comparison["winner"] == "A"
    assert traj.rounds[1].comparison["swap"] is True
    assert traj.usage.critic_calls == 2 + 2


# ------------------------------------------------------------------------------------------------
# stopping rules and budgets
# ------------------------------------------------------------------------------------------------


async def test_rounds_budget_gives_r_plus_one_rounds(tmp_path):
    with ScriptedServer(toy_critic()) as server:
        traj, gen = await run(server, tmp_path, RefineConfig(rounds=2, candidates=3, threshold=None, patience=None))
    assert len(traj.rounds) == 3 and traj.stop_reason == "rounds"
    assert gen.images == 9 and traj.usage.critic_calls == 9


async def test_patience_stops_after_p_rounds_without_improvement(tmp_path):
    with ScriptedServer(toy_critic()) as server:
        traj, _ = await run(server, tmp_path, RefineConfig(rounds=10, candidates=1, threshold=None, patience=2),
                            gen=CountingGenerator(inverted_generator))
    assert [r.accepted for r in traj.rounds] == [True, False, False]
    assert traj.stop_reason == "patience"


async def test_generation_and_critic_budgets_are_never_exceeded(tmp_path):
    with ScriptedServer(toy_critic()) as server:
        traj, gen = await run(server, tmp_path, RefineConfig(rounds=10, candidates=3, threshold=None, patience=None,
                                                             max_generations=7))
    assert gen.images == traj.usage.generator_calls == 7
    assert [len(r.candidates) for r in traj.rounds] == [3, 3, 1] and traj.stop_reason == "budget"
    with ScriptedServer(toy_critic()) as server:
        traj, gen = await run(server, tmp_path / "b", RefineConfig(rounds=10, candidates=2, threshold=None, patience=None,
                                                                   max_critic_calls=6, confirm_pairwise=True))
        n_chat = len(chat_requests(server))
    assert traj.usage.critic_calls == n_chat <= 6 and traj.stop_reason == "budget"


async def test_same_seed_reuses_seeds_and_fresh_seeds_never_repeat(tmp_path):
    with ScriptedServer(toy_critic()) as server:
        same, _ = await run(server, tmp_path / "same", RefineConfig(rounds=2, candidates=2, threshold=None, seed=10,
                                                                    same_seed=True))
        fresh, _ = await run(server, tmp_path / "fresh", RefineConfig(rounds=2, candidates=2, threshold=None, seed=10))
    assert [r.seeds for r in same.rounds] == [[10, 11]] * 3
    assert [r.seeds for r in fresh.rounds] == [[10, 11], [12, 13], [14, 15]]


async def test_same_seed_never_regenerates_an_identical_request_seed_pair(tmp_path):
    # The critic always proposes the same rewrite: with the same seeds it would only reproduce
    # the same images, so the loop stops as "stalled" instead of wasting a round.
    with ScriptedServer(toy_critic(refined=lambda instr, v: instr + " in a frame")) as server:
        traj, gen = await run(server, tmp_path, RefineConfig(rounds=5, candidates=1, threshold=None, patience=None,
                                                             same_seed=True))
    assert [r.request for r in traj.rounds] == [PROMPT, PROMPT + " in a frame"]
    assert traj.stop_reason == "stalled" and gen.images == 2


async def test_best_of_n_mode_samples_the_original_request_with_fresh_seeds(tmp_path):
    with ScriptedServer(toy_critic()) as server:
        traj, gen = await run(server, tmp_path, RefineConfig(rounds=2, candidates=2, threshold=None, best_of_n=True,
                                                             same_seed=True))
    assert traj.mode == "best-of-n"
    assert {r.request for r in traj.rounds} == {PROMPT} and {c[0] for c in gen.calls} == {PROMPT}
    assert [s for r in traj.rounds for s in r.seeds] == list(range(6))


async def test_equal_compute_baseline_reuses_round_zero_and_matches_the_loops_generations(tmp_path):
    with ScriptedServer(toy_critic()) as server:
        traj, gen = await run(server, tmp_path, RefineConfig(rounds=2, candidates=2, threshold=None, baseline=True))
        scores_only = [r for r in chat_requests(server) if "# User Request Refinement" in (r.json.get("stop") or [])]
    base = traj.baseline
    assert base.finished and base.generations == traj.usage.generator_calls == 6
    assert base.reused_from_round0 == 2 and len(base.candidates) == 6
    assert [c.seed for c in base.candidates] == list(range(6))
    assert base.generator_calls == 4 and gen.images == 6 + 4
    assert all(r == PROMPT for r, _, _ in gen.calls[3:])
    # Baseline images are never refined from, so their critiques stop before the refinement tail.
    assert len(scores_only) == base.critic_calls == 4
    # Refinement beats sampling the unrefined request here: that is what the toy is built for.
    assert traj.best.reward > base.best.reward


# ------------------------------------------------------------------------------------------------
# refiner model and drift guard
# ------------------------------------------------------------------------------------------------


async def test_a_separate_refiner_model_writes_the_next_request_from_the_critique(tmp_path):
    with ScriptedServer(toy_critic(refined=lambda instr, v: "IGNORED")) as critic_server, \
            ScriptedServer(lambda req: "Sure.\nRefined request: a grey square, brighter") as refiner_server:
        refiner = Refiner(OpenAIBackend(refiner_server.base_url, "refiner", max_retries=0))
        traj, _ = await run(critic_server, tmp_path, RefineConfig(rounds=1, candidates=1, threshold=None),
                            refiner=refiner)
        await refiner.aclose()
        asked = refiner_server.requests[-1].text("user")
    assert traj.rounds[1].request == "a grey square, brighter" and traj.rounds[1].request_source == "refiner"
    assert traj.usage.refiner_calls == 1 and traj.config["refine_from"] == "refiner"
    assert f"Original request: {PROMPT}" in asked and "Text Faithfulness" in asked and "IGNORED" in asked
    assert traj.rounds[1].accepted


async def test_a_failed_refiner_falls_back_to_the_critics_refined_request(tmp_path):
    with ScriptedServer(toy_critic()) as critic_server, ScriptedServer(lambda req: Reply(status=400)) as refiner_server:
        refiner = Refiner(OpenAIBackend(refiner_server.base_url, "refiner", max_retries=0))
        traj, _ = await run(critic_server, tmp_path, RefineConfig(rounds=1, candidates=1, threshold=None), refiner=refiner)
        await refiner.aclose()
    assert traj.rounds[1].request_source == "critique" and "refiner backend failed" in traj.rounds[1].refiner_error


async def test_drift_guard_anchors_a_rewrite_that_drops_the_users_intent(tmp_path):
    with ScriptedServer(toy_critic(refined=lambda instr, v: "a yellow banana on a table, brighter")) as server:
        traj, _ = await run(server, tmp_path, RefineConfig(rounds=1, candidates=1, threshold=None))
    rnd = traj.rounds[1]
    assert rnd.request_source == "anchored"
    assert rnd.request == "a grey square. a yellow banana on a table, brighter"
    assert rnd.drift["anchored"] and rnd.drift["overlap"] == 0.0 and rnd.drift["proposal"].startswith("a yellow")


def test_intent_overlap_and_anchoring_rules():
    assert intent_overlap("a red bicycle on a wall", "A RED bicycle leaning on a brick wall, golden light") == 1.0
    assert intent_overlap("a red bicycle on a wall", "a blue car") == 0.0
    assert intent_overlap("two cats", "two cat sitting") == 1.0  # plural folded
    assert anchor_request("a cat.", "a dog") == "a cat. a dog"
    assert anchor_request("a cat", "a cat, sharp") == "a cat, sharp"
    assert parse_refiner_answer("<think>hmm</think>**Refined request:** \"a red cat\"") == "a red cat"
    assert parse_refiner_answer("a plain answer\n") == "a plain answer"
    assert parse_refiner_answer("   ") is None


# ------------------------------------------------------------------------------------------------
# failures are values, and runs resume
# ------------------------------------------------------------------------------------------------


async def test_unparseable_critiques_are_recorded_per_candidate_and_do_not_crash(tmp_path):
    with ScriptedServer(lambda req: "I like it.") as server:
        traj, _ = await run(server, tmp_path, RefineConfig(rounds=1, candidates=2, threshold=None, same_seed=True))
    assert traj.best is None and not traj.ok
    cands = traj.rounds[0].candidates
    assert all(not c.ok and c.error_kind == "parse" and c.raw == "I like it." for c in cands)
    assert traj.rounds[0].decision == "no candidate could be scored" and not traj.rounds[0].accepted
    assert traj.stop_reason == "stalled"  # same request, same seeds: nothing new to try


async def test_a_critic_outage_keeps_the_images_and_a_rerun_critiques_them_without_regenerating(tmp_path):
    gen = CountingGenerator()
    with ScriptedServer(lambda req: Reply(status=503)) as down:
        traj, _ = await run(down, tmp_path, RefineConfig(rounds=1, candidates=2, threshold=None), gen=gen)
    assert traj.error_kind == "backend" and not traj.finished and traj.pending is not None
    assert gen.images == 2
    with ScriptedServer(toy_critic()) as up:
        traj, _ = await run(up, tmp_path, RefineConfig(rounds=1, candidates=2, threshold=None), gen=gen)
    assert traj.ok and traj.pending is None and len(traj.rounds) == 2
    assert gen.images == 4 == traj.usage.generator_calls  # round 0's images were not generated again


async def test_a_generator_failure_is_recorded_and_the_rerun_continues_from_the_last_round(tmp_path):
    flaky = {"fail_at": 2}

    def fn(request, *, seed, source=None):
        flaky["n"] = flaky.get("n", 0) + 1
        if flaky["n"] == flaky["fail_at"]:
            raise RuntimeError("CUDA out of memory")
        return toy_generator(request, seed=seed)

    gen = CountingGenerator(fn)
    cfg = RefineConfig(rounds=2, candidates=1, threshold=None, patience=None)
    with ScriptedServer(toy_critic()) as server:
        traj, _ = await run(server, tmp_path, cfg, gen=gen)
        assert traj.error_kind == "generator" and "CUDA out of memory" in traj.error
        assert len(traj.rounds) == 1 and not traj.ok
        on_disk = load_trajectory(tmp_path / "out")
        assert on_disk.error_kind == "generator" and len(on_disk.rounds) == 1
        traj, _ = await run(server, tmp_path, cfg, gen=gen)
    assert traj.ok and len(traj.rounds) == 3 and traj.error is None
    assert [r.round for r in traj.rounds] == [0, 1, 2] and traj.usage.generator_calls == 3


async def test_a_finished_run_is_returned_as_is_and_more_rounds_extend_it(tmp_path):
    gen = CountingGenerator()
    with ScriptedServer(toy_critic()) as server:
        first, _ = await run(server, tmp_path, RefineConfig(rounds=1, candidates=1, threshold=None), gen=gen)
        again, _ = await run(server, tmp_path, RefineConfig(rounds=1, candidates=1, threshold=None), gen=gen)
        assert gen.images == 2 and again.to_json()["rounds"] == first.to_json()["rounds"]
        longer, _ = await run(server, tmp_path, RefineConfig(rounds=3, candidates=1, threshold=None), gen=gen)
    assert len(longer.rounds) == 4 and gen.images == 4
    assert longer.rounds[1].model_dump() == first.rounds[1].model_dump()


async def test_an_output_folder_holding_another_request_is_refused(tmp_path):
    with ScriptedServer(toy_critic()) as server:
        await run(server, tmp_path, RefineConfig(rounds=0, candidates=1))
        with pytest.raises(RefineInputError, match="another request"):
            await run(server, tmp_path, RefineConfig(rounds=0, candidates=1), prompt="a different request")
        traj, _ = await run(server, tmp_path, RefineConfig(rounds=0, candidates=1), prompt="a different request",
                            overwrite=True)
    assert traj.prompt == "a different request" and traj.ok


async def test_bad_inputs_are_clear_errors(tmp_path):
    with ScriptedServer(toy_critic()) as server:
        with pytest.raises(RefineInputError, match="empty"):
            await run(server, tmp_path, RefineConfig(), prompt="  ")
        with pytest.raises(RefineInputError, match="not found"):
            await run(server, tmp_path, RefineConfig(), source=str(tmp_path / "missing.png"))
    with pytest.raises(RefineInputError, match="candidates"):
        RefineConfig(candidates=0).validate()
    with pytest.raises(RefineInputError, match="refiner"):
        RefineConfig(refine_from="refiner").validate(has_refiner=False)


# ------------------------------------------------------------------------------------------------
# edits, outputs, sync API
# ------------------------------------------------------------------------------------------------


async def test_edit_items_send_the_source_to_generator_and_critic(tmp_path):
    src = tmp_path / "src.png"
    Image.new("RGB", (32, 32), (60, 60, 60)).save(src)
    seen = []

    def fn(request, *, seed, source=None):
        seen.append(source)
        return toy_generator(request, seed=seed, source=source)

    with ScriptedServer(toy_critic()) as server:
        traj, _ = await run(server, tmp_path, RefineConfig(rounds=1, candidates=1, threshold=None),
                            gen=CountingGenerator(fn), prompt="make it lighter", source=str(src))
        reqs = chat_requests(server)
    assert traj.task == "edit" and traj.source == ["source_0.png"]
    assert all(isinstance(s, Image.Image) and s.size == (32, 32) for s in seen)
    assert all("Source Image" in r.text("user") and len(r.images()) == 2 for r in reqs)
    assert traj.best.scores["image_faithfulness"] is not None


async def test_trajectory_json_matches_the_contract_and_paths_are_relative(tmp_path):
    with ScriptedServer(toy_critic()) as server:
        await run(server, tmp_path, RefineConfig(rounds=1, candidates=2, threshold=None))
    out = tmp_path / "out"
    data = json.loads((out / "trajectory.json").read_text())
    assert data["prompt"] == PROMPT and data["ok"] is True
    for rnd in data["rounds"]:
        assert {"request", "candidates", "accepted"} <= set(rnd)
        for cand in rnd["candidates"]:
            assert {"image", "reward", "scores"} <= set(cand)
            assert not cand["image"].startswith("/") and (out / cand["image"]).is_file()
    assert {"image", "reward", "request", "round"} <= set(data["best"])
    assert data["rounds"][0]["accepted"] is True
    assert data["usage"] == {"generator_calls": 4, "critic_calls": 4, "refiner_calls": 0}


async def test_the_html_report_shows_every_round_side_by_side(tmp_path):
    with ScriptedServer(toy_critic(refined=lambda i, v: i + ", brighter <b>now</b>")) as server:
        await run(server, tmp_path, RefineConfig(rounds=2, candidates=2, threshold=None, patience=None, baseline=True))
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count("class='round") == 3
    assert html.count("data:image/jpeg;base64,") >= 6 + 6 + 1  # rounds, baseline, best
    assert "Original request" in html and PROMPT in html
    assert "&lt;b&gt;now&lt;/b&gt;" in html and "<b>now</b>" not in html  # model text is escaped
    assert "Best-of-6 baseline" in html and "Text Faithfulness" in html


def test_the_synchronous_api_takes_a_spec_string(tmp_path):
    with ScriptedServer(toy_critic()) as server:
        traj = refine(PROMPT, generator="python:rationalrewards.refine.toy:toy_generator", critic=critic_for(server),
                      out_dir=tmp_path / "sync", config=RefineConfig(rounds=1, candidates=1, threshold=None))
    assert traj.ok and traj.generator == {"generator": "python", "callable": "rationalrewards.refine.toy:toy_generator"}
    assert (tmp_path / "sync" / "report.html").is_file()
