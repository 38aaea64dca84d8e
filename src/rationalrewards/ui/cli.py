"""``rationalrewards ui``: the browser playground (thin: options -> ``build_app`` -> ``launch``)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from ..cli.common import EXIT_INPUT, backend_command, err_console, fail, make_reward_model


@backend_command(required=False)
def ui(
    demo: Annotated[bool, typer.Option(
        "--demo", help="Judge with the offline demo world's scripted judge (no model needed); "
                       "offers the world's images as examples.")] = False,
    demo_noise: Annotated[float, typer.Option(
        "--demo-noise", min=0.0, max=1.0, help="With --demo: chance that the judge misperceives one defect.")] = 0.0,
    run: Annotated[Path | None, typer.Option(
        "--run", help="Open this eval / refine / curate / demo output folder in the Browse tab.")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback: only this machine can connect).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port of the browser UI.")] = 7860,
    token: Annotated[str | None, typer.Option(
        "--token", envvar="RATIONALREWARDS_TOKEN", show_envvar=True,
        help="Require this token (as the login password) to use the UI; needed to bind a non-loopback host.")] = None,
    backend: dict[str, Any] | None = None,
) -> None:
    """Open the browser UI: critique, compare, and browse runs (http://127.0.0.1:7860 by default)."""
    from rich.markup import escape

    if demo and backend is not None:
        fail("choose one judge: --demo or --base-url/--model, not both", EXIT_INPUT)
    if not demo and backend is None:
        fail("choose a judge: --base-url URL (with --model NAME), --model PATH_OR_HF_ID, or --demo", EXIT_INPUT)
    try:
        import gradio  # noqa: F401  (fail here, with the install hint, rather than later)

        from .app import build_app, check_host, launch
        from .samples import demo_reward_model, write_examples
    except ModuleNotFoundError as exc:
        fail(f"the UI needs Gradio ({exc.name} is missing): pip install 'rationalrewards[ui]'", EXIT_INPUT)
    try:
        check_host(host, token)
    except ValueError as exc:
        fail(str(exc), EXIT_INPUT)
    if run is not None and not run.is_dir():
        fail(f"--run: not a folder: {run}", EXIT_INPUT)
    examples = None
    if demo:
        rm = demo_reward_model(noise=demo_noise)
        examples = write_examples(Path(tempfile.mkdtemp(prefix="rr-ui-examples-")))
    else:
        assert backend is not None
        rm = make_reward_model(backend)
    app = build_app(rm, examples=examples, run_dir=run)
    auth = "token required" if token else "no token (loopback only)"
    desc = rm.describe()
    err_console.print(f"RationalRewards UI on http://{escape(host)}:{port}  ({auth}; backend "
                      f"{escape(str(desc.get('backend')))}, model {escape(str(desc.get('model')))})", highlight=False)
    try:
        launch(app, host=host, port=port, token=token, block=True, quiet=True)
    finally:
        rm.close()


def register(app: typer.Typer) -> None:
    """Add ``ui`` to the ``rationalrewards`` CLI."""
    app.command("ui")(ui)
