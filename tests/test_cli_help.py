"""``--help`` teaches: every command, rendered at 80 columns, has examples, described options,
no Python type names, no cut option names and no line wider than the terminal."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from rationalrewards.cli.main import app

GOLDEN = Path(__file__).parent / "golden"
WIDTH = 80


def _walk(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _walk(sub, (*path, name))
    return found


COMMANDS = _walk(get_command(app))


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH), "TERMINAL_WIDTH": str(WIDTH)},
                                terminal_width=WIDTH)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_walk_reaches_the_subcommands_of_every_group() -> None:
    paths = {p for p, _ in COMMANDS}
    for expected in [("critique",), ("compare",), ("parse",), ("parrot", "run"), ("parrot", "train"),
                     ("eval", "compare"), ("rl", "train"), ("demo", "pretrain-base")]:
        assert expected in paths


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "(root)")
def test_help_ends_with_runnable_examples(path: tuple[str, ...]) -> None:
    text = _help(path)
    assert "\nExamples:\n" in text
    examples = text.split("\nExamples:\n", 1)[1].splitlines()
    runnable = [line.strip() for line in examples if line.strip().startswith("rationalrewards ")]
    assert len(runnable) >= 2, text
    # An example of a subcommand runs that subcommand (or one below it).
    for line in runnable:
        words = line.split()
        if path and words[1:2] != ["COMMAND"]:
            assert words[1 : 1 + len(path)] == list(path), line


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "(root)")
def test_help_fits_80_columns_and_names_no_python_types(path: tuple[str, ...]) -> None:
    text = _help(path)
    for line in text.splitlines():
        assert len(line) <= WIDTH, f"{len(line)} columns: {line!r}"
    assert not re.search(r"<(list|str|int|float|bool|path|Path|tuple)\b[^>]*>", text), text
    # An option name cut short by the layout ends in an ellipsis.
    assert not re.search(r"--[\w-]+(\.\.\.|…)", text), text
    assert "\\[" not in text  # rich-markup escapes are not shown to the reader
    assert "[default: (" not in text  # defaults read [default: x], one way everywhere


@pytest.mark.parametrize("path,command", COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_every_option_and_argument_is_described(path: tuple[str, ...], command: Any) -> None:
    undocumented = [p.opts[0] for p in command.params if not (p.help or "").strip()]
    assert undocumented == [], f"{' '.join(path)}: {undocumented}"


def test_prefixed_backend_options_name_their_prefixed_siblings() -> None:
    text = _help(("refine",))
    critic_model = text.split("\n  --critic-model", 1)[1].split("\n  --", 1)[0]
    assert "--critic-base-url" in critic_model
    assert "with --base-url" not in critic_model


def test_a_group_lists_each_command_with_its_whole_first_sentence() -> None:
    for path, command in COMMANDS:
        if not getattr(command, "commands", None):
            continue
        listed = " ".join(_help(path).split("\nCommands:\n", 1)[1].split("\n\n", 1)[0].split())
        for name, sub in command.commands.items():
            sentence = " ".join((sub.help or "").split("\n\n")[0].split())
            assert f"{name} {sentence}" in listed, (path, name)


def test_parse_shows_a_score_on_the_wrong_scale_as_failed_not_na() -> None:
    raw = (GOLDEN / "pw_t2i_ten_point_scale_rejected.txt").read_text(encoding="utf-8")
    assert "8/10" in raw
    result = CliRunner().invoke(app, ["parse", "-"], input=raw, env={"COLUMNS": "120"}, terminal_width=120)
    assert result.exit_code == 3
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in result.output.splitlines() if line.count("│") >= 3 and line.split("│")[1].strip()}
    assert rows["text_faithfulness"] == "failed"  # the reason ('8/10') is printed above the table
    assert rows["text_rendering"] == "N/A"  # a real N/A answer stays N/A
    assert "unexpected scale ('8/10')" in result.output


def test_parse_pairwise_shows_both_sides_of_a_wrong_scale_score_as_failed() -> None:
    raw = (GOLDEN / "pa_edit_ten_point_scale_rejected.txt").read_text(encoding="utf-8")
    result = CliRunner().invoke(app, ["parse", "--pairwise", "--task", "edit", "-"], input=raw,
                                env={"COLUMNS": "120"}, terminal_width=120)
    assert result.exit_code == 3
    row = next(line for line in result.output.splitlines() if "text_faithfulness" in line)
    assert [cell.strip() for cell in row.split("│")[2:4]] == ["failed", "failed"]
    assert "7/10" in result.output


def _examples() -> list[tuple[tuple[str, ...], str]]:
    from rationalrewards.cli.helpfmt import EXAMPLES

    found = []
    for path, lines in EXAMPLES.items():
        joined = "\n".join(lines).replace("\\\n", " ")
        found += [(path, line) for line in joined.splitlines() if "COMMAND" not in line]
    return found


@pytest.mark.parametrize("path,line", _examples(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_example_parses_with_the_real_options(path: tuple[str, ...], line: str) -> None:
    """Each example is a command line the CLI accepts: the command exists, every flag is one of
    its options and every value passes the option's check (parsing only; nothing runs)."""
    import shlex

    words = shlex.split(line.replace("< ", "").replace("<", ""))
    assert words[0] == "rationalrewards"
    command, at = get_command(app), 1
    while getattr(command, "commands", None) and at < len(words) and words[at] in command.commands:
        command, at = command.commands[words[at]], at + 1
    ctx = command.make_context(" ".join(words[:at]), words[at:])
    ctx.close()
