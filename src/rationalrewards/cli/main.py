"""The ``rationalrewards`` console script. Each command parses options and calls the Python API."""

from __future__ import annotations

import importlib

import typer

from . import judge
from .helpfmt import HelpGroup

app = typer.Typer(
    name="rationalrewards",
    help="Reasoning reward models for visual generation: critique before score.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=HelpGroup,  # plain 80-column help with option groups and examples (cli/helpfmt.py)
)

app.command("critique")(judge.critique)
app.command("compare")(judge.compare)
app.command("parse")(judge.parse)

# Stage commands live beside their stage; each module exposes `register(app)`. A module that is
# not there (or whose optional dependencies are missing) simply does not add its command.
_STAGE_COMMANDS = (
    "rationalrewards.eval.cli",
    "rationalrewards.parrot.cli",
    "rationalrewards.serve.cli",
    "rationalrewards.rl.cli",
    "rationalrewards.refine.cli",
    "rationalrewards.curate.cli",
    "rationalrewards.localize.cli",
    "rationalrewards.demo.cli",
    "rationalrewards.ui.cli",
)
for _module in _STAGE_COMMANDS:
    try:
        _mod = importlib.import_module(_module)
    except ModuleNotFoundError as _exc:
        if _exc.name and _module.startswith(_exc.name):
            continue
        raise
    _mod.register(app)


# Top-level module -> the extra that installs it. A command that needs an extra the install
# lacks ends here, whatever command it was, with the pip line instead of a traceback.
EXTRA_FOR_MODULE = {
    "torch": "local", "transformers": "local", "accelerate": "local", "torchvision": "local",
    "trl": "train", "peft": "train",
    "fastapi": "serve", "uvicorn": "serve",
    "diffusers": "rl",
    "datasets": "data", "pyarrow": "data",
    "gradio": "ui",
    "ray": "ray",
}


def missing_extra(exc: BaseException) -> tuple[str, str] | None:
    """``(module, extra)`` when ``exc`` (or an error it was raised from) is a missing optional
    dependency, else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ImportError) and current.name:
            top = current.name.split(".")[0]
            if top in EXTRA_FOR_MODULE:
                return top, EXTRA_FOR_MODULE[top]
        current = current.__cause__ or current.__context__
    return None


def main() -> None:
    try:
        app()
    except ImportError as exc:
        found = missing_extra(exc)
        if found is None:
            raise  # not an optional dependency: a real bug, keep the traceback
        module, extra = found
        from rich.markup import escape

        from .common import EXIT_INPUT, err_console

        err_console.print(
            f"[bold red]error:[/] this command needs the '{extra}' extra ({module} is not installed): "
            + escape(f"pip install 'rationalrewards[{extra}]'"),
            highlight=False,
        )
        raise SystemExit(EXIT_INPUT) from None


if __name__ == "__main__":
    main()
