"""The ``rationalrewards`` console script. Each command parses options and calls the Python API."""

from __future__ import annotations

import importlib

import typer

from . import judge

app = typer.Typer(
    name="rationalrewards",
    help="Reasoning reward models for visual generation: critique before score.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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
)
for _module in _STAGE_COMMANDS:
    try:
        _mod = importlib.import_module(_module)
    except ModuleNotFoundError as _exc:
        if _exc.name and _module.startswith(_exc.name):
            continue
        raise
    _mod.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
