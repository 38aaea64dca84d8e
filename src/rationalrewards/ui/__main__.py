"""``python -m rationalrewards.ui``: the ``ui`` command on its own (same options)."""

from __future__ import annotations

import typer

from .cli import register

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
register(app)

if __name__ == "__main__":
    app()
