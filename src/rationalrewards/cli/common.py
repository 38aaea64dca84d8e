"""Options and helpers shared by every CLI command (the CLI is a thin layer over the API)."""

from __future__ import annotations

import hashlib
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

EXIT_OK = 0
EXIT_INPUT = 2
EXIT_PARSE = 3
EXIT_BACKEND = 4

# The dimensions a judge may answer N/A for unless --allow-na says otherwise (the contract's default).
DEFAULT_ALLOW_NA = "text_rendering"

err_console = Console(stderr=True)
out_console = Console()


# -- option checks: every range is checked once, where the option is declared -----------------
def check_number(
    low: float | None = None, *, above: bool = False, high: float | None = None
) -> Callable[[Any], Any]:
    """A typer callback: the value (or each value of a list) is finite and within range.

    ``above`` makes ``low`` exclusive. click's own ``min=`` lets NaN through (every comparison
    with NaN is false), so ranges are checked here instead; the error names the option, exit 2.
    """

    def check(value: Any) -> Any:
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is None:
                continue
            if isinstance(v, float) and not math.isfinite(v):
                raise typer.BadParameter(f"must be a finite number, not {v}")
            if low is not None and (v <= low if above else v < low):
                raise typer.BadParameter(f"must be {'>' if above else '>='} {low:g}, not {v:g}")
            if high is not None and v > high:
                raise typer.BadParameter(f"must be <= {high:g}, not {v:g}")
        return value

    return check


def check_choice(pattern: str, shown: str) -> Callable[[Any], Any]:
    """A typer callback: the value matches ``pattern`` (``shown`` lists what is accepted)."""
    compiled = re.compile(pattern)

    def check(value: Any) -> Any:
        if value is not None and not compiled.fullmatch(str(value)):
            raise typer.BadParameter(f"must be one of {shown}, not {value!r}")
        return value

    return check


def _check_base_urls(value: Any) -> Any:
    for url in value or ():
        if not re.match(r"https?://[^/\s]+", url):
            raise typer.BadParameter(f"must be an http:// or https:// URL, not {url!r}")
    return value


def _check_cache(value: Any) -> Any:
    if value is not None and value.exists() and not value.is_dir() and value.suffix != ".sqlite":
        raise typer.BadParameter(f"{value} is a file; give a folder (or a .sqlite file) for the cache")
    return value


def parse_aggregation_spec(spec: str) -> Any:
    """The :class:`~rationalrewards.critique.aggregate.Aggregation` named by ``--aggregation``;
    ValueError (naming the problem) for an unknown preset or dimension, a weight that is not a
    finite number >= 0, or weights that are all zero."""
    from ..critique.aggregate import parse_aggregation

    return parse_aggregation(spec)


def parse_allow_na(spec: str) -> tuple[str, ...]:
    """``--allow-na``: comma-separated dimension keys, ``all`` or ``none`` -> the keys (sorted);
    ValueError naming an unknown key."""
    from ..critique.dimensions import resolve_allow_na

    return tuple(sorted(resolve_allow_na(spec)))


def _checked_by(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """An option callback that runs ``parse`` while options are read, so a bad value is a usage
    error (exit 2, naming the option) before any work; the value itself is passed on unchanged."""

    def check(value: Any) -> Any:
        if value is None:
            return value
        try:
            parse(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        return value

    return check


check_aggregation = _checked_by(parse_aggregation_spec)
check_allow_na = _checked_by(parse_allow_na)


DEVICE_PATTERN = r"auto|cpu|mps|meta|(cuda|xpu|npu)(:\d+)?"
DTYPE_PATTERN = r"auto|bfloat16|bf16|float16|fp16|float32|fp32"

# -- backend options (the same names on every command that calls a model) ---------------------
BaseUrlOpt = Annotated[
    list[str] | None,
    typer.Option("--base-url", callback=_check_base_urls, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (repeat to balance over several)."),
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="Served model name with --base-url; otherwise a local folder or HF id run in process."),
]
ApiKeyOpt = Annotated[str | None, typer.Option("--api-key", help="Bearer key (default: $OPENAI_API_KEY).")]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", callback=check_number(1), help="Requests in flight at once.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", callback=check_number(0, above=True), help="Seconds per request attempt.")]
RetriesOpt = Annotated[int, typer.Option("--max-retries", callback=check_number(0), help="Retries on 429/5xx/timeouts.")]
TemperatureOpt = Annotated[float, typer.Option("--temperature", callback=check_number(0))]
MaxTokensOpt = Annotated[int, typer.Option("--max-tokens", callback=check_number(1))]
SeedOpt = Annotated[int | None, typer.Option("--seed")]
DeviceOpt = Annotated[str, typer.Option("--device", callback=check_choice(DEVICE_PATTERN, "auto, cpu, cuda, cuda:N, mps"), help="In-process only: auto, cpu, cuda, cuda:N, mps.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", callback=check_choice(DTYPE_PATTERN, "auto, bfloat16, float16, float32"), help="In-process only: auto, bfloat16, float16, float32.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", callback=check_number(1), help="In-process only: conversations per generate().")]
MaxPixelsOpt = Annotated[int, typer.Option("--max-pixels", callback=check_number(1), help="Downscale images to at most this many pixels.")]
CacheOpt = Annotated[Path | None, typer.Option("--cache", help="Folder for the on-disk response cache (off by default).")]
TemplatesOpt = Annotated[Path | None, typer.Option("--templates", help="Folder with your own prompt template set.")]
AggregationOpt = Annotated[
    str, typer.Option("--aggregation", callback=check_aggregation,
                      help="default | release-edit-rl | release-pairwise | key=weight,...")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def backend_options(
    base_url: list[str] | None,
    model: str | None,
    api_key: str | None,
    concurrency: int,
    timeout: float,
    max_retries: int,
    temperature: float,
    max_tokens: int,
    seed: int | None,
    device: str,
    dtype: str,
    batch_size: int,
    max_pixels: int,
    cache: Path | None,
    templates: Path | None,
    aggregation: str,
    prefix: str = "",
    allow_na: str = DEFAULT_ALLOW_NA,
) -> dict[str, Any]:
    """Collect the shared options into keyword arguments for ``RewardModel.from_options``."""
    from ..backends import SamplingParams

    if not base_url and not model:
        raise typer.BadParameter(
            f"choose a backend: --{prefix}base-url URL (with --{prefix}model NAME) or --{prefix}model PATH_OR_HF_ID"
        )
    if not base_url and model and looks_like_missing_path(model):
        fail(f"--{prefix}model: no model folder at {model} (a hub id looks like ORG/NAME; a local model must "
             "be an existing folder)", EXIT_INPUT)
    if templates is not None and not templates.is_dir():
        fail(f"--{prefix}templates: no template folder at {templates}", EXIT_INPUT)
    return {
        "base_url": base_url or None,
        "model": model,
        "api_key": api_key,
        "concurrency": concurrency,
        "timeout": timeout,
        "max_retries": max_retries,
        "device": device,
        "dtype": dtype,
        "batch_size": batch_size,
        "max_pixels": max_pixels,
        "cache": str(cache) if cache else None,
        "templates": str(templates) if templates else None,
        "aggregation": aggregation,
        "allow_na": parse_allow_na(allow_na),
        "sampling": SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed),
    }


def looks_like_missing_path(value: str) -> bool:
    """True for a ``--model`` value that is meant as a local path but names nothing.

    A value is a path when it starts with ``./``, ``../``, ``/`` or ``~`` (or is ``.``/``..``),
    or when its parent folder exists (``models/judge`` next to a ``models`` folder); a hub id
    ``ORG/NAME`` is neither.
    """
    if Path(value).expanduser().exists():
        return False
    if value in (".", "..") or value.startswith(("./", "../", "/", "~", ".\\", "..\\")):
        return True
    parent = Path(value).expanduser().parent
    return str(parent) not in ("", ".") and parent.is_dir()


def settings_fingerprint(opts: dict[str, Any]) -> dict[str, Any]:
    """The backend options that change what a judgement means (model, prompts, scoring,
    sampling, image size), for pinning a resumable output. Transport settings (URLs,
    concurrency, timeouts, cache, device) are left out: they change how, not what."""
    sampling = opts["sampling"]
    templates = opts.get("templates")
    return {
        "model": opts.get("model"),
        "templates": None if templates is None else _folder_digest(Path(templates)),
        "aggregation": opts.get("aggregation"),
        "allow_na": list(opts.get("allow_na") or ()),
        "temperature": sampling.temperature,
        "max_tokens": sampling.max_tokens,
        "seed": sampling.seed,
        "max_pixels": opts.get("max_pixels"),
    }


def _folder_digest(folder: Path) -> str:
    """Name and content hash of a template folder: an edited template is a different setting."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode("utf-8", "surrogatepass"))
        h.update(f.read_bytes())
    return f"{folder.name}@{h.hexdigest()[:16]}"


def make_reward_model(opts: dict[str, Any], executor: Any = None) -> Any:
    """The judge of a command: a ``RewardModel`` here, or on Ray actors for ``--executor ray``
    (an :class:`~rationalrewards.executors.ExecutorOptions`)."""
    from ..backends import BackendError
    from ..executors import reward_model

    try:
        return reward_model(opts, executor)
    except (ValueError, OSError) as exc:  # a bad setting, or a --cache / --templates path that cannot be used
        fail(str(exc), EXIT_INPUT)
    except BackendError as exc:
        fail(str(exc), EXIT_BACKEND)


def fail(message: str, code: int) -> None:
    """Print ``error: message`` on stderr (shown literally, never read as markup) and exit."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def emit_json(obj: Any) -> None:
    from ..io import dumps_line

    sys.stdout.write(dumps_line(obj) + "\n")
    sys.stdout.flush()


def exit_code_for(result: Any) -> int:
    if result.ok:
        return EXIT_OK
    return {"input": EXIT_INPUT, "parse": EXIT_PARSE, "backend": EXIT_BACKEND}.get(result.error_kind or "", EXIT_PARSE)


@contextmanager
def progress_bar(description: str, total: int, *, disable: bool = False) -> Iterator[Any]:
    """A rich progress bar on stderr (items, items/s via elapsed, ETA)."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=disable or (not err_console.is_terminal and os.environ.get("RATIONALREWARDS_PROGRESS") != "1"),
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total, rate="")
        yield _Advance(progress, task)


class _Advance:
    def __init__(self, progress: Progress, task: Any):
        self.progress = progress
        self.task = task

    def __call__(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)
        t = self.progress.tasks[self.task]
        if t.elapsed:
            self.progress.update(self.task, rate=f"{t.completed / t.elapsed:.2f} it/s")


def resolve_relative(value: Any, base: Path) -> Any:
    """Paths inside a JSONL input are relative to the JSONL file's folder."""
    if value is None:
        return None
    if isinstance(value, list):
        return [resolve_relative(v, base) for v in value]
    if isinstance(value, str) and not value.startswith("data:"):
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else base / p)
    return value


# -- one declaration of the backend options for every command ----------------------------------
# (name, annotation, default, flag, help, check). The defaults are the CLI's; a command may
# override them. ``check`` is the option's typer callback: its range is checked here, once.
_BACKEND_FIELDS: tuple[tuple[str, Any, Any, str, str, Callable[[Any], Any] | None], ...] = (
    ("base_url", list[str] | None, None, "base-url",
     "OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (repeat to balance over several).", _check_base_urls),
    ("model", str | None, None, "model",
     "Served model name with --base-url; otherwise a local folder or HF id run in process.", None),
    ("api_key", str | None, None, "api-key", "Bearer key (default: $OPENAI_API_KEY).", None),
    ("concurrency", int, 16, "concurrency", "Requests in flight at once (>= 1).", check_number(1)),
    ("timeout", float, 300.0, "timeout", "Seconds per request attempt (> 0).", check_number(0, above=True)),
    ("max_retries", int, 4, "max-retries", "Retries on 429/5xx/timeouts (>= 0).", check_number(0)),
    ("temperature", float, 0.1, "temperature", "Sampling temperature (>= 0; 0 is greedy).", check_number(0)),
    ("max_tokens", int, 4096, "max-tokens", "Most tokens generated per answer (>= 1).", check_number(1)),
    ("seed", int | None, None, "seed", "Sampling seed.", None),
    ("device", str, "auto", "device", "In-process only: auto, cpu, cuda, cuda:N, mps.",
     check_choice(DEVICE_PATTERN, "auto, cpu, cuda, cuda:N, mps")),
    ("dtype", str, "auto", "dtype", "In-process only: auto, bfloat16, float16, float32.",
     check_choice(DTYPE_PATTERN, "auto, bfloat16, float16, float32")),
    ("batch_size", int, 8, "batch-size", "In-process only: conversations per generate() (>= 1).", check_number(1)),
    ("max_pixels", int, 802_816, "max-pixels", "Downscale images to at most this many pixels (>= 1).",
     check_number(1)),
    ("cache", Path | None, None, "cache", "Folder for the on-disk response cache (off by default).", _check_cache),
    ("templates", Path | None, None, "templates", "Folder with your own prompt template set.", None),
    ("aggregation", str, "default", "aggregation",
     "default | release-edit-rl | release-pairwise | key=weight,... (checked before any judging).", check_aggregation),
    ("allow_na", str, DEFAULT_ALLOW_NA, "allow-na",
     "Dimensions the judge may answer N/A for (comma-separated keys, all, or none); N/A on any other "
     "dimension fails the item.", check_allow_na),
)


def backend_command(
    prefix: str = "",
    *,
    dest: str = "backend",
    required: bool = True,
    defaults: dict[str, Any] | None = None,
    panel: str | None = None,
) -> Any:
    """Decorator: add the shared backend options to a typer command.

    The command declares a parameter named ``dest`` (not shown on the command line); it receives
    the options as a dict for :func:`make_reward_model`, or ``None`` when ``required=False`` and
    neither ``--{prefix}base-url`` nor ``--{prefix}model`` was given. ``prefix="teacher-"`` gives
    ``--teacher-base-url``, ``--teacher-model``, ... for commands that use two models.
    """
    import inspect

    overrides = defaults or {}
    pyprefix = prefix.replace("-", "_")
    rich_panel = panel or (f"{prefix.rstrip('-').capitalize()} model" if prefix else "Model backend")

    def deco(fn: Any) -> Any:
        added = []
        for name, ann, default, flag, help_text, check in _BACKEND_FIELDS:
            # The shared help names the unprefixed flags; a prefixed option must name its siblings.
            shown = help_text.replace("--base-url", f"--{prefix}base-url") if prefix else help_text
            option = typer.Option(f"--{prefix}{flag}", help=shown, rich_help_panel=rich_panel, callback=check)
            added.append(inspect.Parameter(
                f"{pyprefix}{name}", inspect.Parameter.KEYWORD_ONLY,
                default=overrides.get(name, default), annotation=Annotated[ann, option],
            ))

        def build(given: dict[str, Any]) -> dict[str, Any] | None:
            values = {name: given[f"{pyprefix}{name}"] for name, *_ in _BACKEND_FIELDS}
            if not values["base_url"] and not values["model"]:
                if required:
                    fail(f"choose a backend: --{prefix}base-url URL (with --{prefix}model NAME) "
                         f"or --{prefix}model PATH_OR_HF_ID", EXIT_INPUT)
                return None
            return backend_options(**values, prefix=prefix)

        return replace_parameter(fn, dest, added, build)

    return deco


def replace_parameter(fn: Any, dest: str, added: list[Any], build: Callable[[dict[str, Any]], Any]) -> Any:
    """``fn`` with its parameter ``dest`` hidden from typer and the options ``added``
    (``inspect.Parameter``s) shown instead; on each call ``dest`` receives ``build(values of the
    added options)``. With ``added=[]`` the parameter is simply hidden (``build({})``)."""
    import functools
    import inspect

    sig = inspect.signature(fn, eval_str=True)
    if dest not in sig.parameters:
        raise TypeError(f"{fn.__name__} must declare a '{dest}' parameter")
    kept = [p for p in sig.parameters.values() if p.name != dest]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind == p.POSITIONAL_OR_KEYWORD else p
              for p in kept] + added
    names = [p.name for p in added]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs[dest] = build({name: kwargs.pop(name) for name in names})
        return fn(*args, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # typer must see the new signature, not the original
    return wrapper


# -- where batch judging runs (--executor) ------------------------------------------------------
_EXECUTOR_PANEL = "Executor"
_EXECUTOR_FIELDS: tuple[tuple[str, Any, Any, str, str, Any], ...] = (
    ("executor", str, "local", "executor",
     "Where the judging runs: local (this process) or ray (Ray actors, one judge each; extra [ray]).",
     check_choice("local|ray", "local, ray")),
    ("ray_address", str | None, None, "ray-address",
     "Ray cluster to join (auto, HOST:PORT, ray://HOST:PORT); default: $RAY_ADDRESS, else a local instance.",
     None),
    ("ray_workers", int | None, None, "ray-workers",
     "Ray actors (judges) to start; default: as many as the cluster's CPUs (GPUs with --ray-num-gpus).",
     check_number(1)),
    ("ray_num_gpus", float, 0.0, "ray-num-gpus",
     "GPUs per Ray actor, for an in-process --model on GPU nodes (0 for judges behind --base-url).",
     check_number(0)),
)


def executor_command(fn: Any) -> Any:
    """Decorator: add ``--executor``, ``--ray-address``, ``--ray-workers`` and ``--ray-num-gpus``
    to a batch command, which receives them as ``executor`` (an
    :class:`~rationalrewards.executors.ExecutorOptions`). ``--executor ray`` without Ray
    installed stops here (exit 2, naming the extra) before any input is read."""
    import importlib.util
    import inspect

    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                               annotation=Annotated[ann, typer.Option(f"--{flag}", help=help_text, callback=check,
                                                                      rich_help_panel=_EXECUTOR_PANEL)])
             for name, ann, default, flag, help_text, check in _EXECUTOR_FIELDS]

    def build(values: dict[str, Any]) -> Any:
        from ..executors import ExecutorOptions

        try:
            executor = ExecutorOptions(kind=values["executor"], address=values["ray_address"],
                                       workers=values["ray_workers"], num_gpus=values["ray_num_gpus"])
        except ValueError as exc:
            fail(str(exc), EXIT_INPUT)
        if executor.kind == "ray" and importlib.util.find_spec("ray") is None:
            raise ModuleNotFoundError("No module named 'ray'", name="ray")
        return executor

    return replace_parameter(fn, "executor", added, build)
