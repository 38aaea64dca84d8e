"""Example images of the demo world for ``rationalrewards ui --demo``.

The scripted demo judge (backend ``demo-teacher``) can only see images of the offline demo world:
it reads the scene each PNG carries in its ``rr-scene`` chunk. These examples give a fresh machine
something to judge: a text-to-image request with a faithful and a flawed answer, and an edit with
its source, a correct result and a result where the change was not made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EXAMPLE_SIZE = 160


@dataclass(frozen=True)
class Examples:
    """Paths of the written example files and the requests that go with them."""

    t2i_request: str
    t2i_good: Path
    t2i_flawed: Path
    edit_request: str
    edit_source: Path
    edit_good: Path
    edit_unchanged: Path


def write_examples(folder: str | Path, size: int = EXAMPLE_SIZE) -> Examples:
    """Render the example scenes into ``folder`` (created if needed) and return their paths."""
    from ..demo.world import Obj, Scene, render_png

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    t2i_request = ('A large red circle on the left and a small blue square on the right '
                   'with the word "SUN" written below')
    good = Scene((Obj("circle", "red", "large", "left"), Obj("square", "blue", "small", "right")), "SUN")
    # Wrong colour, misspelled word and visible noise: three dimensions lose points.
    flawed = Scene((Obj("circle", "red", "large", "left"), Obj("square", "green", "small", "right")), "SNU",
                   ("noise",))
    edit_request = "Turn the blue circle red"
    source = Scene((Obj("triangle", "yellow", "large", "left"), Obj("circle", "blue", "small", "middle")))
    edited = Scene((Obj("triangle", "yellow", "large", "left"), Obj("circle", "red", "small", "middle")))
    files = {
        "t2i_good.png": good, "t2i_flawed.png": flawed,
        "edit_source.png": source, "edit_good.png": edited, "edit_unchanged.png": source,
    }
    for name, scene in files.items():
        (out / name).write_bytes(render_png(scene, size))
    return Examples(t2i_request, out / "t2i_good.png", out / "t2i_flawed.png", edit_request,
                    out / "edit_source.png", out / "edit_good.png", out / "edit_unchanged.png")


def demo_reward_model(noise: float = 0.0, seed: int = 0) -> object:
    """A :class:`~rationalrewards.RewardModel` over the scripted demo judge (no model weights).

    ``noise=0`` makes the judge report exactly the defects each scene has, so the scores shown are
    the world's truth; raise it to see the perception errors the demo's PARROT filter removes.
    """
    from ..critique.model import RewardModel
    from ..demo.teacher import DemoTeacher

    return RewardModel(DemoTeacher(noise=noise, seed=seed))
