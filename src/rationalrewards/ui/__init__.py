"""``rationalrewards ui``: a browser playground for a reward model (extra ``rationalrewards[ui]``).

    from rationalrewards import RewardModel
    from rationalrewards.ui import build_app, launch

    rm = RewardModel.from_openai("http://127.0.0.1:8000/v1", model="RationalRewards-8B-T2I")
    launch(build_app(rm))                      # http://127.0.0.1:7860

Three tabs: *Critique* (one image or edit: reward, per-dimension scores and justifications, the
refined request), *Compare* (two images, optionally in both orders) and *Browse a run* (eval,
refine, curate and demo output folders, filtered and paged). ``--demo`` runs the offline demo
world's scripted judge, so the UI works on a machine with no model at all. See ``docs/ui.md``.
Importing this package does not import Gradio; :func:`build_app` does.
"""

from __future__ import annotations

from typing import Any


def build_app(model: Any, **kwargs: Any) -> Any:
    """See :func:`rationalrewards.ui.app.build_app`."""
    from .app import build_app as _build

    return _build(model, **kwargs)


def launch(app: Any, **kwargs: Any) -> Any:
    """See :func:`rationalrewards.ui.app.launch`."""
    from .app import launch as _launch

    return _launch(app, **kwargs)


__all__ = ["build_app", "launch"]
