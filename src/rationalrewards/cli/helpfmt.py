"""``--help`` that teaches: plain, 80-column help with option groups and worked examples.

Typer's rich help table squeezes long option names (``--teacher-base-url``) and their help into
six columns, which at 80 columns cuts names and leaves a few characters per line of text, and it
prints Python annotations (``<list[str]>``) as metavars. Every command of the ``rationalrewards``
tree is therefore given, once when the tree is built (:class:`HelpGroup`):

* a metavar in words (``TEXT``, ``INTEGER``, ``NUMBER``, ``PATH``) instead of a type name;
* click's plain layout (name column, then wrapped help; a long name gets its own line), with one
  section per option group (the ``rich_help_panel`` the option was declared with);
* an ``Examples`` section: runnable command lines from :data:`EXAMPLES`, one per line.

Defaults are shown one way only: click's ``[default: x]`` after the help text.
"""

from __future__ import annotations

import inspect
import textwrap
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from typer.core import TyperGroup

# Runnable examples per command path (the words after ``rationalrewards``). Each line is shown as
# it stands, so each stays within 76 characters (80 columns less the section indent).
EXAMPLES: dict[tuple[str, ...], tuple[str, ...]] = {
    (): (
        "rationalrewards critique --prompt 'a red ball' --image ball.png \\",
        "    --base-url http://127.0.0.1:8000/v1 --model rationalrewards-8b",
        "rationalrewards demo --quick --out runs/demo",
        "rationalrewards COMMAND --help",
    ),
    ("critique",): (
        "rationalrewards critique --prompt 'a red ball on grass' --image ball.png \\",
        "    --base-url http://127.0.0.1:8000/v1 --model rationalrewards-8b",
        "rationalrewards critique --prompt 'make the ball blue' --image out.png \\",
        "    --source in.png --model ./models/judge --device cuda --json",
        "rationalrewards critique --input items.jsonl --output critiques.jsonl \\",
        "    --base-url http://127.0.0.1:8000/v1 --model judge --concurrency 32",
    ),
    ("compare",): (
        "rationalrewards compare --prompt 'a red ball' --image-a a.png \\",
        "    --image-b b.png --base-url http://127.0.0.1:8000/v1 --model judge",
        "rationalrewards compare --prompt 'a red ball' --image-a a.png \\",
        "    --image-b b.png --mode pointwise --swap --model ./models/judge",
        "rationalrewards compare --input pairs.jsonl --output verdicts.jsonl \\",
        "    --base-url http://127.0.0.1:8000/v1 --model judge --strict",
    ),
    ("parse",): (
        "rationalrewards parse model_output.txt",
        "rationalrewards parse --task edit --json < answer.txt",
        "rationalrewards parse --pairwise --tie-tolerance 0.5 pair_answer.txt",
    ),
    ("serve",): (
        "rationalrewards serve --model ./models/judge --device cuda --port 8080",
        "rationalrewards serve --base-url http://127.0.0.1:8000/v1 \\",
        "    --model judge --token secret --concurrency 64",
    ),
    ("refine",): (
        "rationalrewards refine --generator diffusers:stabilityai/sdxl-turbo \\",
        "    --prompt 'a red ball' --out runs/refine --critic-model ./models/judge",
        "rationalrewards refine --generator openai:http://127.0.0.1:9000/v1 \\",
        "    --input prompts.jsonl --out runs/refine --rounds 3 \\",
        "    --critic-base-url http://127.0.0.1:8000/v1 --critic-model judge",
    ),
    ("curate",): (
        "rationalrewards curate --input data.jsonl --out runs/curated \\",
        "    --base-url http://127.0.0.1:8000/v1 --model judge --min-reward 0.7",
        "rationalrewards curate --input critiques.jsonl --out runs/curated \\",
        "    --min text_faithfulness=3",
    ),
    ("localize",): (
        "rationalrewards localize --critique critique.json --image out.png \\",
        "    --out runs/regions",
        "rationalrewards localize --critique critique.json --image out.png \\",
        "    --out runs/regions --segmenter none --box-threshold 0.3",
    ),
    ("ui",): (
        "rationalrewards ui --demo",
        "rationalrewards ui --base-url http://127.0.0.1:8000/v1 --model judge",
        "rationalrewards ui --run runs/demo --port 7861",
    ),
    ("eval",): (
        "rationalrewards eval --benchmark genai-bench-t2i --data bench.parquet \\",
        "    --out runs/eval --base-url http://127.0.0.1:8000/v1 --model judge",
        "rationalrewards eval --benchmark pairs --data pairs.jsonl \\",
        "    --out runs/eval-pairs --model ./models/judge --swap --limit 200",
        "rationalrewards eval compare runs/eval runs/eval-pairs",
    ),
    ("eval", "compare"): (
        "rationalrewards eval compare runs/eval-a runs/eval-b",
        "rationalrewards eval compare runs/eval-a runs/eval-b --json",
    ),
    ("parrot",): (
        "rationalrewards parrot run --pairs pairs.jsonl --out runs/parrot \\",
        "    --teacher-base-url http://127.0.0.1:8000/v1 --teacher-model teacher",
        "rationalrewards parrot train --data runs/parrot/sft \\",
        "    --model Qwen/Qwen2.5-VL-3B-Instruct --out runs/student --lora",
    ),
    ("parrot", "run"): (
        "rationalrewards parrot run --pairs pairs.jsonl --out runs/parrot \\",
        "    --teacher-base-url http://127.0.0.1:8000/v1 --teacher-model teacher",
        "rationalrewards parrot run --config examples/parrot.yaml \\",
        "    --pairs data/hpdv3 --preset hpdv3 --out runs/parrot --limit 500",
    ),
    ("parrot", "anchor"): (
        "rationalrewards parrot anchor --pairs pairs.jsonl --out runs/parrot \\",
        "    --teacher-base-url http://127.0.0.1:8000/v1 --teacher-model teacher",
        "rationalrewards parrot anchor --config examples/parrot.yaml \\",
        "    --out runs/parrot --samples 4 --orders both",
    ),
    ("parrot", "filter"): (
        "rationalrewards parrot filter --out runs/parrot \\",
        "    --teacher-base-url http://127.0.0.1:8000/v1 --teacher-model teacher",
        "rationalrewards parrot filter --out runs/parrot --no-repredict --margin 1",
    ),
    ("parrot", "build-sft"): (
        "rationalrewards parrot build-sft --out runs/parrot",
        "rationalrewards parrot build-sft --out runs/parrot --val-fraction 0.05",
    ),
    ("parrot", "train"): (
        "rationalrewards parrot train --data runs/parrot/sft \\",
        "    --model Qwen/Qwen2.5-VL-3B-Instruct --out runs/student --lora",
        "rationalrewards parrot train --data runs/parrot/sft --model ./base \\",
        "    --out runs/student --epochs 2 --learning-rate 1e-5 --bf16",
    ),
    ("rl",): (
        "rationalrewards rl train --config examples/rl_tiny_smoke.yaml --dry-run",
        "rationalrewards rl train --config examples/rl_flux_t2i.yaml \\",
        "    --output-dir runs/rl-flux --max-steps 200",
    ),
    ("rl", "train"): (
        "rationalrewards rl train --config examples/rl_tiny_smoke.yaml --dry-run",
        "rationalrewards rl train --config examples/rl_flux_t2i.yaml \\",
        "    --output-dir runs/rl-flux --set learning_rate=1e-4",
        "rationalrewards rl train --config examples/rl_flux_t2i.yaml --resume never",
    ),
    ("demo",): (
        "rationalrewards demo --quick --out runs/demo-quick",
        "rationalrewards demo --out runs/demo --seed 1 --threads 2",
        "rationalrewards demo pretrain-base --out runs/base",
    ),
    ("demo", "pretrain-base"): (
        "rationalrewards demo pretrain-base --out runs/base",
        "rationalrewards demo pretrain-base --out runs/base --steps 400 --seed 1",
    ),
}

# Words for the value an option takes, by the Python annotation typer was given.
_METAVARS: dict[Any, str] = {str: "TEXT", int: "INTEGER", float: "NUMBER", Path: "PATH", bool: "BOOLEAN"}


def _metavar(annotation: Any) -> str | None:
    """``TEXT`` for ``str | None``, ``PATH`` for ``list[Path] | None``, ...; None when unknown."""
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return _metavar(inner[0]) if len(inner) == 1 else None
    if origin in (list, tuple):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        return _metavar(args[0]) if args else None
    if isinstance(annotation, type):
        return _METAVARS.get(annotation, annotation.__name__.upper())
    return None


def _polish_params(command: Any) -> None:
    for param in command.params:
        # Help written for rich markup escapes a literal "[" as "\[", which plain help would show.
        if getattr(param, "help", None):
            param.help = param.help.replace("\\[", "[")
        if isinstance(getattr(param, "show_default", None), str):
            # A default resolved later (from --config) is declared as text; typer would show it
            # as "[default: (16)]", so it is written the same way as every other default.
            param.help = f"{param.help or ''}  [default: {param.show_default}]".strip()
            param.show_default = False
        if param.param_type_name == "argument":
            # An argument is shown by its name (FILE, RUNS...); typer would append its annotation.
            shown = (param.metavar or param.name or "").upper() + ("..." if param.nargs != 1 else "")
            param.display_type_rich = lambda ctx: None
            param._rich_display_name = lambda shown=shown: shown
            continue
        if getattr(param, "is_flag", False) or getattr(param, "metavar", None) is not None:
            continue
        descriptor = getattr(param, "type_descriptor", None)
        word = _metavar(descriptor.annotation) if descriptor is not None else None
        if word is not None:
            param.metavar = word


def _wrap(text: str, width: int) -> list[str]:
    # Never break inside a flag: click's wrapper splits "--critic-base-url" after a hyphen.
    return textwrap.wrap(text, max(width, 20), break_on_hyphens=False)


def _write_dl(formatter: Any, rows: list[tuple[str, str]], col_max: int = 30, spacing: int = 2) -> None:
    """click's two-column list (a name longer than ``col_max`` gets a line of its own)."""
    indent = " " * formatter.current_indent
    first = min(max(len(name) for name, _ in rows), col_max) + spacing
    pad = indent + " " * first
    for name, text in rows:
        lines = _wrap(text, formatter.width - len(pad)) if text else []
        if not lines:
            formatter.write(f"{indent}{name}\n")
            continue
        head = f"{indent}{name}" + (" " * (first - len(name)) if len(name) + spacing <= first else "\n" + pad)
        formatter.write(head + lines[0] + "\n")
        for line in lines[1:]:
            formatter.write(pad + line + "\n")


def _write_description(self: Any, formatter: Any) -> None:
    text = inspect.cleandoc(self.help or "").partition("\f")[0].strip()
    if not text:
        return
    formatter.write_paragraph()
    indent = " " * (formatter.current_indent + 2)
    for i, paragraph in enumerate(text.split("\n\n")):
        if i:
            formatter.write("\n")
        for line in _wrap(" ".join(paragraph.split()), formatter.width - len(indent)):
            formatter.write(indent + line + "\n")


def _format_help(self: Any, ctx: Any, formatter: Any) -> None:
    """Usage, description, one section per option group, subcommands, then examples."""
    self.format_usage(ctx, formatter)
    _write_description(self, formatter)
    arguments: list[tuple[str, str]] = []
    panels: dict[str, list[tuple[str, str]]] = {}
    for param in self.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        if param.param_type_name == "argument":
            arguments.append(record)
        else:
            panels.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
    if arguments:
        with formatter.section("Arguments"):
            _write_dl(formatter, arguments)
    # The command's own options first, then the groups (model backends) in declaration order.
    for name in sorted(panels, key=lambda n: n != "Options"):
        with formatter.section(name):
            _write_dl(formatter, panels[name])
    commands = [(name, self.get_command(ctx, name)) for name in getattr(self, "commands", {})]
    if commands:
        # The whole first sentence of each command (click would cut it at ~45 characters).
        rows = [(name, (cmd.help or "").strip().split("\n\n")[0].replace("\n", " "))
                for name, cmd in commands if cmd is not None and not cmd.hidden]
        with formatter.section("Commands"):
            _write_dl(formatter, rows)
    examples = EXAMPLES.get(tuple(ctx.command_path.split()[1:]))
    if examples:
        with formatter.section("Examples"):
            for line in examples:
                formatter.write(" " * formatter.current_indent + line + "\n")


def polish(command: Any) -> None:
    """Give ``command`` and every command below it the plain help layout described above."""
    _polish_params(command)
    command.rich_markup_mode = None  # the plain path of typer's format_help (defaults as [default: x])
    command.format_help = types.MethodType(_format_help, command)
    for sub in getattr(command, "commands", {}).values():
        polish(sub)


class HelpGroup(TyperGroup):
    """The root group: polishes the whole command tree once, when typer builds it.

    Errors keep typer's rich panel (``main`` reads the group's markup mode, kept as given);
    only the help layout is replaced.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        markup = self.rich_markup_mode
        polish(self)
        self.rich_markup_mode = markup  # for error messages; help goes through _format_help

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _format_help(self, ctx, formatter)
