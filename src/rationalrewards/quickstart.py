"""``python -m rationalrewards.quickstart``: critique the example image with a tiny test model.

No real checkpoint can be downloaded on an offline machine, so this builds a tiny *random*
Qwen3-VL locally and runs the real ``rationalrewards critique`` command with it. Its text is
noise, and the run shows exactly how that is reported: a parse failure (exit code 3) with the raw
text kept, never a made-up score. Point the same command at a released checkpoint or a vLLM
server to get real critiques (see the README).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rich.console import Console

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    console = Console(stderr=True)
    from .testing import build_tiny_qwen3vl_cached

    console.print("[bold]1/2[/] building a tiny random Qwen3-VL checkpoint (offline, once)...")
    model = build_tiny_qwen3vl_cached()
    image = REPO / "examples" / "red_ball.png"
    if not image.is_file():  # installed without the repo: write the example next to the model
        from PIL import Image, ImageDraw

        image = model.parent / "red_ball.png"
        img = Image.new("RGB", (384, 256), (135, 190, 235))
        ImageDraw.Draw(img).ellipse([150, 110, 230, 190], fill=(210, 30, 40))
        img.save(image)
    cmd = [
        sys.executable, "-m", "rationalrewards.cli.main", "critique",
        "--prompt", "a red ball on a green lawn next to a sign that says OPEN",
        "--image", str(image), "--model", str(model), "--device", "cpu", "--max-tokens", "64",
    ]
    console.print("[bold]2/2[/] rationalrewards critique --prompt '...' --image examples/red_ball.png "
                  "--model <tiny-qwen3vl> --device cpu --max-tokens 64")
    code = subprocess.call(cmd)
    if code == 3:
        console.print(
            "\n[green]As expected:[/] the tiny model is random, so its answer cannot be parsed and the "
            "critique is reported as a parse failure (exit code 3) with the raw text kept — not as a score.\n"
            "With a real judge, e.g. [bold]--model TIGER-Lab/RationalRewards-8B-T2I[/] (GPU) or "
            "[bold]--base-url http://127.0.0.1:8000/v1 --model RationalRewards-8B-T2I[/] (vLLM), "
            "the same command prints per-dimension scores, a reward and a refined request."
        )
        return 0
    console.print(f"[red]unexpected exit code {code}[/]")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
