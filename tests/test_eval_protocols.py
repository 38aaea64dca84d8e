"""Evaluation protocols as pure functions: labels, rankings, tie calibration, bootstrap intervals."""

from __future__ import annotations

import pytest

from rationalrewards.eval.labels import normalize_label, parse_ranking
from rationalrewards.eval.protocols import (
    OrderView,
    Record,
    Unit,
    best_threshold,
    bootstrap_ci,
    both_orders_acc,
    four_way_acc,
    group_tie_calibrated_acc,
    no_ties_acc,
    pair_interval,
    position_bias,
    summarize,
    three_way_acc,
    tie_calibrated_acc,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("leftvote", "A"), ("rightvote", "B"), ("tievote", "tie"), ("bothbad_vote", "bothbad"),
        ("A", "A"), ("b", "B"), (" A>B ", "A"), ("B>A", "B"), ("A=B", "tie"), ("A = B", "tie"),
        (1, "A"), (2, "B"), ("1", "A"), ("2.0", "B"), (2.0, "B"),
        ("model_1", "A"), ("model_2", "B"), ("model_a", "A"), ("model_b", "B"),
        ("tie (bothbad)", "bothbad"), ("Tie", "tie"), ("Image A", "A"), ("image_b", "B"),
        ("left", "A"), ("right", "B"), ("It's a tie", "tie"), ("A=B=Bad", "bothbad"),
    ],
)
def test_every_benchmark_label_encoding_is_understood(raw, expected):
    assert normalize_label(raw) == expected


@pytest.mark.parametrize("raw", [None, "", "C", "maybe", 0, 3, True, "A>B>C", ["A"], {"winner": "A"}])
def test_anything_else_is_unknown_rather_than_guessed(raw):
    assert normalize_label(raw) is None


def test_rankings_become_tiers_best_first():
    assert parse_ranking("A>B>C") == [[0], [1], [2]]
    assert parse_ranking("A=B>C") == [[0, 1], [2]]
    assert parse_ranking("B > A = C") == [[1], [0, 2]]
    assert parse_ranking("C<A") is None  # the letters must be the first K
    assert parse_ranking("B<A") == [[0], [1]]
    assert parse_ranking("A>B>D") is None  # C missing: not a ranking of the first K candidates
    assert parse_ranking("A>B<C") is None
    assert parse_ranking("A>>B") is None
    assert parse_ranking(None) is None


def rec(id, label, pred, margin, *, ok=True, category=None, group=None, orders=(), reward=(None, None)):
    return Record(id=id, label=label, category=category, group=group, judged=True, ok=ok,
                  prediction=pred if ok else None, margin=margin if ok else None,
                  reward_a=reward[0], reward_b=reward[1], orders=list(orders))


def test_pair_interval_encodes_when_a_threshold_makes_the_pair_right():
    assert pair_interval("A", 2.0, False) == (0.0, 2.0)      # right while not called a tie
    assert pair_interval("B", 2.0, False) == (0.0, 0.0)      # wrong sign: never right
    assert pair_interval("tie", -1.5, False) == (1.5, float("inf"))
    assert pair_interval("bothbad", 0.0, False) == (0.0, float("inf"))
    assert pair_interval("A", 2.0, True) == (0.0, 0.0)       # failures are never right


def test_best_threshold_picks_the_smallest_epsilon_with_the_best_accuracy():
    units = [Unit(str(i), None, False, 0, 1, iv) for i, iv in enumerate(
        [(0, 4), (0, 4), (0, 0), (0, float("inf")), (1, float("inf")), (0, 1), (1, float("inf"))])]
    eps, correct, total = best_threshold(units)
    # eps=0: units 0,1,3,5 -> 4; eps=1: 0,1,3,4,6 -> 5; eps=4: 3,4,6 -> 3
    assert (eps, correct, total) == (1, 5, 7)
    assert best_threshold([])[:2] == (0.0, 0.0)


def test_protocols_by_hand():
    records = [
        rec("1", "A", "A", 4.0), rec("2", "B", "B", -4.0), rec("3", "A", "B", -2.0),
        rec("4", "tie", "tie", 0.0, reward=(0.6, 0.7)), rec("5", "bothbad", "tie", 0.0, reward=(0.1, 0.2)),
        rec("6", "tie", "A", 1.0), rec("7", "A", "A", 1.0), rec("8", "bothbad", "A", 1.0),
        rec("9", "A", None, None, ok=False),
    ]
    assert three_way_acc(records, 0.0).accuracy == pytest.approx(5 / 9)
    assert no_ties_acc(records).accuracy == pytest.approx(3 / 5)
    assert four_way_acc(records, 0.5).accuracy == pytest.approx(5 / 9)
    # A 4-way tie needs the rewards: both images good -> tie, both poor -> both bad.
    assert four_way_acc(records, 0.05).accuracy == pytest.approx(4 / 9)
    cal = tie_calibrated_acc(records, "score-sum")
    assert cal.epsilon == 1.0 and cal.accuracy == pytest.approx(6 / 9)
    block = summarize(cal, n_boot=0, seed=0)
    # Excluding the failure is a separate view with its own threshold, never the headline.
    assert block["accuracy"] == pytest.approx(6 / 9)
    assert block["excluding_failed"]["accuracy"] == pytest.approx(6 / 8)


def test_both_orders_counts_each_judgement_and_flags_position_bias():
    def o(winner, first):
        return OrderView(ok=True, winner=winner, margin=None, first=first)

    records = [
        rec("1", "A", "A", 1.0, orders=[o("A", "A"), o("A", "B")]),
        rec("2", "A", "tie", 0.0, orders=[o("A", "A"), o("B", "B")]),   # prefers whatever is shown first
        rec("3", "B", "tie", 0.0, orders=[o("tie", "A"), o("tie", "B")]),
        Record(id="4", label="B", judged=True, ok=False,
               orders=[OrderView(ok=True, winner="B", margin=None, first="A"),
                       OrderView(ok=False, winner=None, margin=None, first="B", error_kind="parse")]),
    ]
    p = both_orders_acc(records, swap=True)
    assert (p.correct, p.total) == (2 + 1 + 0 + 1, 8)
    # Excluding failures skips the one failed judgement, not the whole pair (MMRB2's script).
    assert summarize(p, n_boot=0, seed=0)["excluding_failed"]["accuracy"] == pytest.approx(4 / 7)
    pb = position_bias(records)
    assert pb["pairs"] == 3 and pb["rate"] == pytest.approx(1 / 3) and pb["strict_flip_rate"] == pytest.approx(1 / 3)
    # Decisive order verdicts: 1 -> A(first), A(second); 2 -> A(first), B(first): 3 of 4 chose the first image.
    assert pb["first_position_rate"] == pytest.approx(3 / 4)


def test_group_calibration_intersects_the_pairs_of_a_group():
    records = [
        rec("g1#1-2", "A", "A", 3.0, group="g1"), rec("g1#1-3", "tie", "B", -1.5, group="g1"),
        rec("g1#2-3", "A", "A", 4.5, group="g1"),
        rec("g2#1-2", "A", "A", 1.0, group="g2"),
    ]
    p = group_tie_calibrated_acc(records, "score-sum")
    # g1 is right for eps in [1.5, 3); g2 for eps in [0, 1): one of the two at best, smallest eps first.
    assert p.accuracy == pytest.approx(1 / 2) and p.epsilon == 0.0


def test_bootstrap_interval_is_reproducible_and_brackets_the_estimate():
    records = [rec(str(i), "A", "A" if i % 4 else "B", 1.0 if i % 4 else -1.0) for i in range(200)]
    p = three_way_acc(records, 0.0)
    ci1 = bootstrap_ci(p, n_boot=300, seed=7)
    ci2 = bootstrap_ci(p, n_boot=300, seed=7)
    assert ci1 == ci2
    assert ci1[0] < p.accuracy < ci1[1]
    assert ci1[0] > 0.6 and ci1[1] < 0.9
    cal = tie_calibrated_acc(records, "m")
    lo, hi = bootstrap_ci(cal, n_boot=200, seed=1)
    assert lo <= cal.accuracy <= hi
