"""Does PARROT's filter help? A student trained on filtered vs unfiltered rationales, same budget.

Runs the demo twice on the same synthetic world with the scripted teacher at 30% noise: once
through PARROT's filter (consistency + re-prediction) and once on the raw teacher output (every
parseable anchored rationale of the first sample). Both students have the same architecture,
initialisation, steps and data order budget; both are evaluated with ``eval --benchmark pairs``
on the same held-out pairs. Prints the rationale error rates (claimed defects vs the world's
truth) of the raw and the kept rationales, and both students' accuracies.

    python bench/bench_demo_filter_ablation.py                 # under 2 minutes on two cores
    python bench/bench_demo_filter_ablation.py --default-budget  # the demo's default budget (~17 min)
    python bench/bench_demo_filter_ablation.py --out runs/ablation --keep

The default budget is smaller than ``--quick``: the students learn the format but not yet to
look, so their accuracies are near zero (ties) and say nothing; pass the demo's default budget
(``--default-budget``) for a meaningful accuracy comparison. The error-rate comparison is meaningful
at any budget.
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
    ap.add_argument("--steps", type=int, default=150, help="student training steps [150]")
    ap.add_argument("--train-pairs", type=int, default=150)
    ap.add_argument("--eval-pairs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--default-budget", action="store_true",
                    help="the demo's default budget (1000 pairs, 1500 steps, 100 held-out pairs; ~17 min)")
    args = ap.parse_args(argv)

    from rationalrewards.demo.pipeline import DemoConfig, DemoRun

    root = args.out or Path(tempfile.mkdtemp(prefix="rr-ablation-"))
    results = {}
    t0 = time.perf_counter()
    try:
        for name, use_filter in (("filtered", True), ("unfiltered", False)):
            sizes = {} if args.default_budget else {"max_steps": args.steps, "train_pairs": args.train_pairs,
                                                    "eval_pairs": args.eval_pairs}
            cfg = DemoConfig.preset(quick=not args.default_budget, out=str(root / name), seed=args.seed,
                                    teacher_noise=args.noise, filter=use_filter, refine_prompts=0,
                                    teacher_reference=False, **sizes)
            run = DemoRun(cfg, log=lambda m, tag=name: print(f"  [{tag}] {m}", file=sys.stderr), overwrite=True)
            t = time.perf_counter()
            done = run.run(stages=("world", "parrot", "student", "eval"))
            results[name] = {**done, "seconds": round(time.perf_counter() - t, 1)}
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
    print(f"kept/raw error ratio {errors['kept']['error_rate'] / max(errors['raw']['error_rate'], 1e-9):.3f}; "
          f"wall {time.perf_counter() - t0:.1f}s")
    print(json.dumps({"raw_error_rate": errors["raw"]["error_rate"], "kept_error_rate": errors["kept"]["error_rate"],
                      "accuracy_filtered": acc_f, "accuracy_unfiltered": acc_u}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
