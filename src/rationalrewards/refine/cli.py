"""``rationalrewards refine``: the Generate-Critique-Refine loop from the command line (thin layer)."""

from __future__ import annotations

import copy
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ..cli.common import (
    EXIT_BACKEND,
    EXIT_INPUT,
    EXIT_OK,
    EXIT_PARSE,
    JsonOpt,
    backend_command,
    emit_json,
    err_console,
    fail,
    make_reward_model,
    out_console,
    progress_bar,
)

_LOOP = "Loop"
_GEN = "Generator"
_CRITIC = "Critic (scores every image against the original request)"
_REFINER = "Refiner (optional separate model that writes the next request)"

# Before the critic's options came from backend_command, four of them had no prefix; those
# spellings keep working as second names of the --critic- options.
_LEGACY_CRITIC_FLAGS = {
    "critic_max_pixels": "--max-pixels",
    "critic_cache": "--cache",
    "critic_templates": "--templates",
    "critic_aggregation": "--aggregation",
}


def _with_flag_aliases(aliases: dict[str, str]) -> Callable[[Any], Any]:
    """Give options of a typer command (by parameter name) a second flag name.

    Raises ``TypeError`` at import time when a named parameter is missing or is not an
    ``Annotated[..., typer.Option(...)]`` option, so a change in ``backend_command`` cannot
    silently drop an old flag name.
    """

    def deco(fn: Any) -> Any:
        sig = inspect.signature(fn)
        missing = sorted(set(aliases) - set(sig.parameters))
        if missing:
            raise TypeError(f"{fn.__name__} has no option parameter(s) {missing} to alias")
        params = []
        for p in sig.parameters.values():
            alias = aliases.get(p.name)
            if alias is not None:
                base, *meta = typing.get_args(p.annotation) or (None,)
                info = next((m for m in meta if isinstance(m, typer.models.OptionInfo)), None)
                if info is None:
                    raise TypeError(f"{fn.__name__}: parameter {p.name} is not a typer option")
                info = copy.copy(info)
                info.param_decls = (*(info.param_decls or ()), alias)
                p = p.replace(annotation=Annotated[base, info])
            params.append(p)
        fn.__signature__ = sig.replace(parameters=params)
        fn.__annotations__ = {p.name: p.annotation for p in params}
        return fn

    return deco


@_with_flag_aliases(_LEGACY_CRITIC_FLAGS)
@backend_command("critic-", dest="critic_options", required=False, panel=_CRITIC)
def refine_cmd(
    critic_options: dict[str, Any] | None,
    generator: Annotated[str, typer.Option("--generator", help="diffusers:PATH_OR_ID | openai:BASE_URL\\[#model] | python:module:function")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (resumes if it holds the same run).")],
    prompt: Annotated[str | None, typer.Option("--prompt", help="The request (t2i prompt or edit instruction).")] = None,
    source: Annotated[list[Path] | None, typer.Option("--source", help="Source image(s); makes it an edit task.")] = None,
    input: Annotated[Path | None, typer.Option("--input", help="Batch: prompts .txt (one per line) or .jsonl {id, prompt|instruction, source?, seed?}.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="Batch: only the first N items.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Batch: items in flight at once.")] = 2,
    strict: Annotated[bool, typer.Option("--strict", help="Batch: exit non-zero if any item failed.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Single item: discard a previous run in --out.")] = False,
    # -- loop
    rounds: Annotated[int, typer.Option("--rounds", min=0, help="Refinement rounds after round 0.", rich_help_panel=_LOOP)] = 3,
    candidates: Annotated[int, typer.Option("--candidates", min=1, help="Images per round (N).", rich_help_panel=_LOOP)] = 2,
    threshold: Annotated[float, typer.Option("--threshold", min=0.0, max=1.0, help="Stop once the best reward reaches it.", rich_help_panel=_LOOP)] = 0.9,
    patience: Annotated[int, typer.Option("--patience", min=0, help="Stop after P rounds without improvement (0: off).", rich_help_panel=_LOOP)] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Base generator seed.", rich_help_panel=_LOOP)] = 0,
    same_seed: Annotated[bool, typer.Option("--same-seed", help="Reuse the same N seeds every round (isolates the request's effect).", rich_help_panel=_LOOP)] = False,
    best_of_n: Annotated[bool, typer.Option("--best-of-n", help="Baseline mode: never refine, sample the original request with fresh seeds.", rich_help_panel=_LOOP)] = False,
    baseline: Annotated[bool | None, typer.Option("--baseline/--no-baseline", help="Also run best-of-K at equal generations (default: on for --input).", rich_help_panel=_LOOP)] = None,
    max_generations: Annotated[int | None, typer.Option("--max-generations", min=1, help="Cap on images generated per item.", rich_help_panel=_LOOP)] = None,
    max_critic_calls: Annotated[int | None, typer.Option("--max-critic-calls", min=1, help="Cap on critic requests per item.", rich_help_panel=_LOOP)] = None,
    min_improvement: Annotated[float, typer.Option("--min-improvement", min=0.0, help="A new best must beat the old by more than this.", rich_help_panel=_LOOP)] = 0.0,
    confirm_pairwise: Annotated[bool, typer.Option("--confirm-pairwise", help="Accept a new best only if a pairwise comparison also prefers it.", rich_help_panel=_LOOP)] = False,
    confirm_swap: Annotated[bool, typer.Option("--confirm-swap", help="Judge the confirmation in both orders.", rich_help_panel=_LOOP)] = False,
    refine_from: Annotated[str | None, typer.Option("--refine-from", help="critique | refiner (default: refiner when one is given).", rich_help_panel=_LOOP)] = None,
    min_intent_overlap: Annotated[float, typer.Option("--min-intent-overlap", min=0.0, max=1.0, help="Drift guard: anchor proposals keeping less of the original's content words (0: off).", rich_help_panel=_LOOP)] = 0.5,
    # -- generator
    gen_device: Annotated[str, typer.Option("--gen-device", help="diffusers: auto, cpu, cuda, cuda:N, mps.", rich_help_panel=_GEN)] = "auto",
    gen_dtype: Annotated[str, typer.Option("--gen-dtype", help="diffusers: auto, bfloat16, float16, float32.", rich_help_panel=_GEN)] = "auto",
    gen_steps: Annotated[int | None, typer.Option("--gen-steps", min=1, help="diffusers: num_inference_steps.", rich_help_panel=_GEN)] = None,
    gen_guidance: Annotated[float | None, typer.Option("--gen-guidance", help="diffusers: guidance_scale.", rich_help_panel=_GEN)] = None,
    gen_width: Annotated[int | None, typer.Option("--gen-width", min=8, help="diffusers: image width in pixels (model default if unset).", rich_help_panel=_GEN)] = None,
    gen_height: Annotated[int | None, typer.Option("--gen-height", min=8, help="diffusers: image height in pixels (model default if unset).", rich_help_panel=_GEN)] = None,
    gen_negative_prompt: Annotated[str | None, typer.Option("--gen-negative-prompt", help="diffusers: negative prompt for every image.", rich_help_panel=_GEN)] = None,
    gen_batch_size: Annotated[int | None, typer.Option("--gen-batch-size", min=1, help="diffusers: most images per pipeline call.", rich_help_panel=_GEN)] = None,
    gen_arg: Annotated[list[str] | None, typer.Option("--gen-arg", help="KEY=VALUE passed to every generator call (JSON values), repeatable.", rich_help_panel=_GEN)] = None,
    gen_api_key: Annotated[str | None, typer.Option("--gen-api-key", help="openai: bearer key (default $OPENAI_API_KEY).", rich_help_panel=_GEN)] = None,
    gen_size: Annotated[str | None, typer.Option("--gen-size", help="openai: size such as 1024x1024.", rich_help_panel=_GEN)] = None,
    gen_timeout: Annotated[float, typer.Option("--gen-timeout", help="openai: seconds per request.", rich_help_panel=_GEN)] = 600.0,
    # -- critic: the shared backend options with a critic- prefix (backend_command)
    # -- refiner
    refiner_base_url: Annotated[list[str] | None, typer.Option("--refiner-base-url", help="Server of a separate model that rewrites the request (unset: none is used).", rich_help_panel=_REFINER)] = None,
    refiner_model: Annotated[str | None, typer.Option("--refiner-model", help="Refiner model: served name at --refiner-base-url, or a local folder / HF id.", rich_help_panel=_REFINER)] = None,
    refiner_api_key: Annotated[str | None, typer.Option("--refiner-api-key", help="Bearer key for --refiner-base-url (default: $OPENAI_API_KEY).", rich_help_panel=_REFINER)] = None,
    refiner_temperature: Annotated[float, typer.Option("--refiner-temperature", help="Sampling temperature of the request rewrite.", rich_help_panel=_REFINER)] = 0.3,
    refiner_max_tokens: Annotated[int, typer.Option("--refiner-max-tokens", min=1, help="Most tokens in the rewritten request.", rich_help_panel=_REFINER)] = 1024,
    json_out: JsonOpt = False,
) -> None:
    """Generate -> critique against the ORIGINAL request -> keep the best -> refine the request -> repeat.

    The critic is chosen with the shared backend options, prefixed: --critic-base-url,
    --critic-model, --critic-concurrency, ... (--max-pixels, --cache, --templates and --aggregation
    are accepted as the old spellings of their --critic- options).
    """
    from ..backends import SamplingParams
    from .generators import GeneratorInputError, generator_from_spec, parse_kv_options
    from .loop import RefineConfig, RefineInputError

    if input is None and not prompt:
        fail("give --prompt (and --source for an edit), or --input FILE for a batch", EXIT_INPUT)
    if input is not None and (prompt or source):
        fail("--input runs a batch; do not combine it with --prompt/--source", EXIT_INPUT)
    if refine_from not in (None, "critique", "refiner"):
        fail(f"--refine-from must be critique or refiner, not {refine_from!r}", EXIT_INPUT)
    for s in source or []:
        if not s.is_file():
            fail(f"source image not found: {s}", EXIT_INPUT)
    config = RefineConfig(
        rounds=rounds, candidates=candidates, threshold=threshold, patience=patience or None, seed=seed,
        same_seed=same_seed, best_of_n=best_of_n, max_generations=max_generations, max_critic_calls=max_critic_calls,
        min_improvement=min_improvement, confirm_pairwise=confirm_pairwise, confirm_swap=confirm_swap,
        refine_from=refine_from,  # type: ignore[arg-type]
        min_intent_overlap=min_intent_overlap,
        baseline=(input is not None) if baseline is None else baseline,
    )
    try:
        config.validate(has_refiner=bool(refiner_base_url or refiner_model))
        call_kwargs = parse_kv_options(gen_arg or [])
        gen = generator_from_spec(
            generator, device=gen_device, dtype=gen_dtype, steps=gen_steps, guidance=gen_guidance, width=gen_width,
            height=gen_height, negative_prompt=gen_negative_prompt, call_kwargs=call_kwargs or None,
            batch_size=gen_batch_size,
            extra_body=call_kwargs or None, api_key=gen_api_key, size=gen_size, timeout=gen_timeout,
        )
    except (RefineInputError, GeneratorInputError) as exc:
        fail(str(exc), EXIT_INPUT)
    if critic_options is None:
        fail("choose a critic: --critic-base-url URL (with --critic-model NAME) or --critic-model PATH_OR_HF_ID",
             EXIT_INPUT)
    assert critic_options is not None
    critic = make_reward_model(critic_options)
    refiner = None
    if refiner_base_url or refiner_model:
        from ..backends import BackendError
        from .refiner import Refiner

        try:
            refiner = Refiner.from_options(
                base_url=refiner_base_url or None, model=refiner_model, api_key=refiner_api_key,
                timeout=critic_options["timeout"], max_retries=critic_options["max_retries"],
                device=critic_options["device"], dtype=critic_options["dtype"],
                sampling=SamplingParams(temperature=refiner_temperature, max_tokens=refiner_max_tokens),
            )
        except (ValueError, FileNotFoundError) as exc:
            fail(f"refiner: {exc}", EXIT_INPUT)
        except BackendError as exc:
            fail(f"refiner: {exc}", EXIT_BACKEND)
    try:
        if input is not None:
            code = _run_batch(input, out, gen, critic, config, refiner, concurrency, limit, json_out, strict)
        else:
            assert prompt is not None
            code = _run_single(prompt, [str(s) for s in source or []], out, gen, critic, config, refiner, overwrite,
                               json_out)
    finally:
        gen.close()
    raise typer.Exit(code)


def _run_single(prompt: str, sources: list[str], out: Path, gen: Any, critic: Any, config: Any, refiner: Any,
                overwrite: bool, json_out: bool) -> int:
    import asyncio

    from .loop import RefineInputError, RefineLoop
    from .trajectory import TRAJECTORY_FILE, item_summary

    def on_round(traj: Any, rnd: Any) -> None:
        verdict = "accepted" if rnd.accepted else "rejected"
        err_console.print(f"round {rnd.round}: best {_fmt(rnd.round_best_reward)} ({verdict}; {rnd.decision})",
                          highlight=False)

    async def go() -> Any:
        try:
            loop = RefineLoop(gen, critic, config, refiner=refiner, on_round=on_round)
            src: Any = sources[0] if len(sources) == 1 else (sources or None)
            return await loop.arun(prompt, out, source=src, overwrite=overwrite)
        finally:
            await critic.aclose()
            if refiner is not None:
                await refiner.aclose()

    try:
        traj = asyncio.run(go())
    except RefineInputError as exc:
        fail(str(exc), EXIT_INPUT)
    summary = item_summary(traj, str(out))
    summary["trajectory"] = str(out / TRAJECTORY_FILE)
    summary["report"] = str(out / "report.html")
    if json_out:
        emit_json(summary)
    else:
        _show_single(traj, out)
    if traj.ok:
        return EXIT_OK
    if traj.error_kind in ("backend", "generator"):
        return EXIT_BACKEND
    if traj.error_kind == "input":
        return EXIT_INPUT
    return EXIT_PARSE


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _show_single(traj: Any, out: Path) -> None:
    from rich.table import Table

    table = Table("round", "request from", "best reward", "accepted", "request", show_lines=False)
    for rnd in traj.rounds:
        table.add_row(str(rnd.round), rnd.request_source, _fmt(rnd.round_best_reward), "yes" if rnd.accepted else "no",
                      rnd.request[:90])
    if traj.rounds:
        out_console.print(table)
    if traj.error:
        out_console.print(f"[red]error ({traj.error_kind}):[/] {traj.error}", highlight=False)
    if traj.best is not None:
        out_console.print(f"[bold]best[/] reward {_fmt(traj.best.reward)} from round {traj.best.round}: "
                          f"{out / str(traj.best.image)}", highlight=False)
        out_console.print(f"[bold]request[/] {traj.best.request}", highlight=False)
    u = traj.usage
    out_console.print(f"stop: {traj.stop_reason or 'unfinished'} · generations {u.generator_calls} · critic calls "
                      f"{u.critic_calls} · refiner calls {u.refiner_calls} · report {out / 'report.html'}",
                      highlight=False)


def _run_batch(input_path: Path, out: Path, gen: Any, critic: Any, config: Any, refiner: Any, concurrency: int,
               limit: int | None, json_out: bool, strict: bool) -> int:
    import asyncio

    from ..io import InputFileError
    from .batch import arefine_batch, read_items

    try:
        rows = read_items(input_path)
    except InputFileError as exc:
        fail(str(exc), EXIT_INPUT)
    total = len(rows) if limit is None else min(limit, len(rows))
    counts = {"ok": 0, "failed": 0}
    err_console.print(f"{total} items -> {out} (finished items are skipped on rerun)")
    with progress_bar("refine", total) as advance:

        def on_item(row: dict[str, Any]) -> None:
            counts["ok" if row.get("ok") else "failed"] += 1
            advance()
            if json_out:
                emit_json(row)

        async def go() -> dict[str, Any]:
            try:
                return await arefine_batch(input_path, out, generator=gen, critic=critic, config=config,
                                           refiner=refiner, concurrency=concurrency, limit=limit, on_item=on_item)
            finally:
                await critic.aclose()
                if refiner is not None:
                    await refiner.aclose()

        try:
            summary = asyncio.run(go())
        except InputFileError as exc:
            fail(str(exc), EXIT_INPUT)
    mr = summary["mean_reward"]
    err_console.print(
        f"done: {summary['n_ok']} ok, {summary['n_failed']} failed (retried on rerun) · mean reward round 0 "
        f"{_fmt(mr['round0'])} -> final {_fmt(mr['final'])} · best-of-K baseline {_fmt(mr['baseline'])} · improved "
        f"{_fmt(summary['share_improved'])} · {out / 'summary.json'}",
        highlight=False,
    )
    if strict and summary["n_failed"]:
        kinds = summary["failed_by_kind"]
        if kinds.get("backend") or kinds.get("generator"):
            return EXIT_BACKEND
        return EXIT_INPUT if kinds.get("input") else EXIT_PARSE
    return EXIT_OK


def register(app: typer.Typer) -> None:
    """Add ``refine`` to the ``rationalrewards`` command."""
    app.command("refine")(refine_cmd)
