"""``rationalrewards rl ...``: reinforcement learning of generators with the judge as reward."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from .train_cli import register_train

    rl_app = typer.Typer(
        name="rl",
        help="RL of diffusion/flow generators rewarded by RationalRewards (DiffusionNFT + LoRA).",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    register_train(rl_app)
    app.add_typer(rl_app, name="rl")
