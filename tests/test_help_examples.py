"""Every example a command's `--help` shows runs (issue 26: `degrade eval`'s did not), on generated images.

Each example line runs in a fresh copy of a small world: the folders the examples name, and the runs and
shards they read (made by the commands themselves). Long commands run with `--dry-run`, which still reads
every input and checks every option; the rest run at tiny settings.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import click
import pytest

from tests.cli_examples import assert_ran, command_lines, command_of, programs, run, tiny, write_inputs

# What the examples read besides the generated folders, made once by the commands themselves.
WORLD = """
degrade fit --hr faces-hr --lr faces-lr --out runs/degrader --steps 2
degrade export-shards --degrader runs/degrader --hr faces-hr --out shards
sr train --shards shards --out runs/sr --steps 2
sr finetune --degrader runs/degrader --sr runs/sr --hr faces-hr --lr faces-lr --out runs/joint --steps 2
"""


def examples(command: click.Command) -> list[str]:
    """The command lines under "Example:" in a command's help."""
    lines = (command.help or "").splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "Example:"]
    return [line.strip() for i in starts for line in lines[i + 1 :] if line.strip().startswith(("degrade ", "sr "))]


def all_examples() -> list[tuple[str, str]]:
    """(command name, example line) for every command of both programs, the groups themselves included; a line
    that runs as another already listed (`sr train --shards shards --out runs/sr` with or without --steps) once."""
    found, seen = [], set()
    for name, group in programs().items():
        for command in [*(group.commands[c] for c in sorted(group.commands)), group]:
            label = name if command is group else f"{name} {command.name}"
            for line in examples(command):
                key = shlex.join(tiny(command_lines(line)[0], dry_run=True))
                if key not in seen:
                    seen.add(key)
                    found.append((label, line))
    return found


EXAMPLES = all_examples()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("help-world")
    write_inputs(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for tokens in command_lines(WORLD):
            assert_ran(run(tokens), tokens)
    return root


def out_of(tokens: list[str]) -> str | None:
    return tokens[tokens.index("--out") + 1] if "--out" in tokens else None


def test_every_command_that_takes_inputs_shows_an_example():
    labelled = {label for label, _ in EXAMPLES}
    for name, group in programs().items():
        for command in group.commands.values():
            assert f"{name} {command.name}" in labelled, f"`{name} {command.name} --help` shows no example"


@pytest.mark.parametrize(("label", "line"), EXAMPLES, ids=[f"{label}: {line}" for label, line in EXAMPLES])
def test_help_example_runs(label, line, world, tmp_path, monkeypatch):
    (tokens,) = command_lines(line)
    assert " ".join(tokens[: len(label.split())]) == label, f"{label}'s example runs another command: {line}"
    here = tmp_path / "w"
    shutil.copytree(world, here)
    monkeypatch.chdir(here)
    out = out_of(tokens)
    if out and "--resume" not in tokens and Path(out).exists():  # the example starts this output afresh
        shutil.rmtree(out)
    args = tiny(tokens, dry_run=True)
    result = run(args)
    assert_ran(result, args)
    if "--dry-run" not in args and "--help" not in args and out:
        assert Path(out).exists(), f"`{shlex.join(args)}` wrote nothing to --out {out}"
    assert command_of(tokens) is not None
