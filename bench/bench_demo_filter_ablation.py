"""Does PARROT's filter help? A student trained on filtered vs unfiltered rationales, same budget.

Runs the demo twice on the same synthetic world with the scripted teacher at 30% noise: once
through PARROT's filter (consistency + re-prediction) and once on the raw teacher output (every
parseable anchored rationale of the first sample). Both students start from the same shipped
base and get the same steps and data-order seed; both are evaluated with ``eval --benchmark
pairs`` on the same held-out pairs. Prints the rationale error rates (claimed defects vs the
world's truth) of the raw and the kept rationales, both students' accuracies with Wilson 95%
intervals, and the paired difference with a paired-bootstrap 95% interval.

    python bench/bench_demo_filter_ablation.py                   # the --quick budget, 2 x ~2 minutes
    python bench/bench_demo_filter_ablation.py --default-budget  # the demo's default budget, 400 pairs
    python bench/bench_demo_filter_ablation.py --noise 0.5 --default-budget
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    ap.add_argument("--noise", type=float, default=0.3, help="teacher noise [0.3]")
    ap.add_argument("--steps", type=int, default=None, help="student training steps [the preset's]")
    ap.add_argument("--train-pairs", type=int, default=None)
    ap.add_argument("--eval-pairs", type=int, default=None, help="held-out pairs [400 with --default-budget]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--default-budget", action="store_true",
                    help="the demo's default budget and 400 held-out pairs (about 2 x 8 minutes)")
    args = ap.parse_args(argv)

    from rationalrewards.demo.pipeline import DemoConfig, DemoRun

    root = args.out or Path(tempfile.mkdtemp(prefix="rr-ablation-"))
    results = {}
    t0 = time.perf_counter()
    try:
        for name, use_filter in (("filtered", True), ("unfiltered", False)):
            sizes = {"max_steps": args.steps, "train_pairs": args.train_pairs,
                     "eval_pairs": args.eval_pairs or (400 if args.default_budget else None)}
            cfg = DemoConfig.preset(quick=not args.default_budget, out=str(root / name), seed=args.seed,
                                    teacher_noise=args.noise, filter=use_filter, refine_prompts=0,
                                    teacher_reference=False, zero_shot=False, curve_points=0, **sizes)
            run = DemoRun(cfg, log=lambda m, tag=name: print(f"  [{tag}] {m}", file=sys.stderr), overwrite=True)
            t = time.perf_counter()
            done = run.run(stages=("world", "parrot", "student", "eval"))
            results[name] = {**done, "seconds": round(time.perf_counter() - t, 1),
                             "correct": _correct(root / name / "eval" / "student" / "results.jsonl")}
    finally:
        if not args.keep and args.out is None:
            shutil.rmtree(root, ignore_errors=True)

    f, u = results["filtered"], results["unfiltered"]
    errors = f["parrot"]["rationale_errors"]
    acc_f, acc_u = f["eval"]["student"]["accuracy"], u["eval"]["student"]["accuracy"]
    print(f"teacher noise {args.noise:.2f}; students: {f['student'].get('global_step')} steps each")
    print(f"rationale error rate (claimed defects != truth): raw {errors['raw']['error_rate']:.3f} "
          f"(n={errors['raw']['n']}) -> kept {errors['kept']['error_rate']:.3f} (n={errors['kept']['n']})")
    print(f"  pairwise: raw {errors['raw']['pairwise']:.3f} -> kept {errors['kept']['pairwise']:.3f}; "
          f"pointwise: raw {errors['raw']['pointwise']:.3f} -> kept {errors['kept']['pointwise']:.3f}")
    print(f"SFT examples: filtered {f['parrot']['sft_examples'].get('examples')}, "
          f"unfiltered {u['parrot']['sft_examples'].get('examples')}")
    print(f"student accuracy on {f['eval']['student']['n']} held-out pairs (protocol "
          f"{f['eval']['student']['protocol']}): filtered {acc_f:.3f} vs unfiltered {acc_u:.3f} "
          f"(difference {acc_f - acc_u:+.3f}); parse rates {f['eval']['student']['parse_rate']:.3f} / "
          f"{u['eval']['student']['parse_rate']:.3f}")
    diff, lo, hi = paired_difference(f["correct"], u["correct"])
    cf, cu = f["eval"]["student"], u["eval"]["student"]
    print(f"  filtered 95% CI {wilson(f['correct'])}, unfiltered {wilson(u['correct'])}; paired difference "
          f"{diff:+.3f} (95% CI {lo:+.3f} to {hi:+.3f}, paired bootstrap over {len(f['correct'])} pairs)")
    print(f"kept/raw error ratio {errors['kept']['error_rate'] / max(errors['raw']['error_rate'], 1e-9):.3f}; "
          f"wall {time.perf_counter() - t0:.1f}s")
    print(json.dumps({"raw_error_rate": errors["raw"]["error_rate"], "kept_error_rate": errors["kept"]["error_rate"],
                      "accuracy_filtered": acc_f, "accuracy_unfiltered": acc_u, "n": cf["n"],
                      "difference": round(diff, 4), "difference_ci95": [round(lo, 4), round(hi, 4)],
                      "seconds": {k: v["seconds"] for k, v in results.items()}, "examples": cu.get("n")}))
    return 0


def _correct(path: Path) -> dict[str, bool]:
    """Per held-out pair: was the student right (3way: a tie or a failure is wrong)?"""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["id"]: bool(r.get("ok") and r.get("prediction") == r.get("label")) for r in rows}


def wilson(correct: dict[str, bool]) -> list[float]:
    from rationalrewards.demo.pipeline import wilson_ci

    return wilson_ci(sum(correct.values()), len(correct)) or [0.0, 0.0]


def paired_difference(a: dict[str, bool], b: dict[str, bool], n_boot: int = 4000,
                      seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over the shared pairs and its paired-bootstrap 95% interval."""
    import random

    ids = sorted(set(a) & set(b))
    d = [int(a[i]) - int(b[i]) for i in ids]
    if not d:
        return 0.0, 0.0, 0.0
    rng = random.Random(seed)
    boots = sorted(sum(rng.choice(d) for _ in d) / len(d) for _ in range(n_boot))
    return sum(d) / len(d), boots[int(0.025 * n_boot)], boots[int(0.975 * n_boot) - 1]


if __name__ == "__main__":
    sys.exit(main())
