"""Options and helpers shared by every CLI command (the CLI is a thin layer over the API)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
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

err_console = Console(stderr=True)
out_console = Console()

# -- backend options (the same names on every command that calls a model) ---------------------
BaseUrlOpt = Annotated[
    list[str] | None,
    typer.Option("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (repeat to balance over several)."),
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="Served model name with --base-url; otherwise a local folder or HF id run in process."),
]
ApiKeyOpt = Annotated[str | None, typer.Option("--api-key", help="Bearer key (default: $OPENAI_API_KEY).")]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", min=1, help="Requests in flight at once.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds per request attempt.")]
RetriesOpt = Annotated[int, typer.Option("--max-retries", min=0, help="Retries on 429/5xx/timeouts.")]
TemperatureOpt = Annotated[float, typer.Option("--temperature")]
MaxTokensOpt = Annotated[int, typer.Option("--max-tokens", min=1)]
SeedOpt = Annotated[int | None, typer.Option("--seed")]
DeviceOpt = Annotated[str, typer.Option("--device", help="In-process only: auto, cpu, cuda, cuda:N, mps.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="In-process only: auto, bfloat16, float16, float32.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1, help="In-process only: conversations per generate().")]
MaxPixelsOpt = Annotated[int, typer.Option("--max-pixels", min=1, help="Downscale images to at most this many pixels.")]
CacheOpt = Annotated[Path | None, typer.Option("--cache", help="Folder for the on-disk response cache (off by default).")]
TemplatesOpt = Annotated[Path | None, typer.Option("--templates", help="Folder with your own prompt template set.")]
AggregationOpt = Annotated[
    str, typer.Option("--aggregation", help="default | release-edit-rl | release-pairwise | key=weight,...")
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
) -> dict[str, Any]:
    """Collect the shared options into keyword arguments for ``RewardModel.from_options``."""
    from ..backends import SamplingParams

    if not base_url and not model:
        raise typer.BadParameter(
            f"choose a backend: --{prefix}base-url URL (with --{prefix}model NAME) or --{prefix}model PATH_OR_HF_ID"
        )
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
        "sampling": SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed),
    }


def make_reward_model(opts: dict[str, Any]) -> Any:
    from ..backends import BackendError
    from ..critique.model import RewardModel

    try:
        return RewardModel.from_options(**dict(opts))
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc), EXIT_INPUT)
    except BackendError as exc:
        fail(str(exc), EXIT_BACKEND)


def fail(message: str, code: int) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
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
# (name, annotation, default, flag, help). The defaults are the CLI's; a command may override them.
_BACKEND_FIELDS: tuple[tuple[str, Any, Any, str, str], ...] = (
    ("base_url", list[str] | None, None, "base-url",
     "OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (repeat to balance over several)."),
    ("model", str | None, None, "model",
     "Served model name with --base-url; otherwise a local folder or HF id run in process."),
    ("api_key", str | None, None, "api-key", "Bearer key (default: $OPENAI_API_KEY)."),
    ("concurrency", int, 16, "concurrency", "Requests in flight at once."),
    ("timeout", float, 300.0, "timeout", "Seconds per request attempt."),
    ("max_retries", int, 4, "max-retries", "Retries on 429/5xx/timeouts."),
    ("temperature", float, 0.1, "temperature", "Sampling temperature."),
    ("max_tokens", int, 4096, "max-tokens", "Most tokens generated per answer."),
    ("seed", int | None, None, "seed", "Sampling seed."),
    ("device", str, "auto", "device", "In-process only: auto, cpu, cuda, cuda:N, mps."),
    ("dtype", str, "auto", "dtype", "In-process only: auto, bfloat16, float16, float32."),
    ("batch_size", int, 8, "batch-size", "In-process only: conversations per generate()."),
    ("max_pixels", int, 802_816, "max-pixels", "Downscale images to at most this many pixels."),
    ("cache", Path | None, None, "cache", "Folder for the on-disk response cache (off by default)."),
    ("templates", Path | None, None, "templates", "Folder with your own prompt template set."),
    ("aggregation", str, "default", "aggregation", "default | release-edit-rl | release-pairwise | key=weight,..."),
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
    import functools
    import inspect

    overrides = defaults or {}
    pyprefix = prefix.replace("-", "_")
    rich_panel = panel or (f"{prefix.rstrip('-').capitalize()} model" if prefix else "Model backend")

    def deco(fn: Any) -> Any:
        sig = inspect.signature(fn, eval_str=True)
        if dest not in sig.parameters:
            raise TypeError(f"{fn.__name__} must declare a '{dest}' parameter for backend_command")
        kept = [p for p in sig.parameters.values() if p.name != dest]
        added = []
        for name, ann, default, flag, help_text in _BACKEND_FIELDS:
            option = typer.Option(f"--{prefix}{flag}", help=help_text, rich_help_panel=rich_panel)
            added.append(inspect.Parameter(
                f"{pyprefix}{name}", inspect.Parameter.KEYWORD_ONLY,
                default=overrides.get(name, default), annotation=Annotated[ann, option],
            ))
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind == p.POSITIONAL_OR_KEYWORD else p
                  for p in kept] + added

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(f"{pyprefix}{name}") for name, *_ in _BACKEND_FIELDS}
            if not values["base_url"] and not values["model"]:
                if required:
                    fail(f"choose a backend: --{prefix}base-url URL (with --{prefix}model NAME) "
                         f"or --{prefix}model PATH_OR_HF_ID", EXIT_INPUT)
                kwargs[dest] = None
            else:
                kwargs[dest] = backend_options(**values, prefix=prefix)
            return fn(*args, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # typer must see the new signature, not the original
        return wrapper

    return deco
