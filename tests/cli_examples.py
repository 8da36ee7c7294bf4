"""Run documented command lines (the README's, each `--help`'s example) through click, at tiny settings.

A documented line runs as written except for what makes it tiny: `--steps`/`--sr-steps` shrink (a line
without `--steps` gets one where the command has it), and `--dry-run` is added where a caller asks for it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
from click.testing import CliRunner, Result

from tests.conftest import write_images

PROGRAMS = ("degrade", "sr")


def programs() -> dict[str, click.Group]:
    from cli.degrade import degrade
    from cli.sr import sr

    return {"degrade": degrade, "sr": sr}


def command_lines(text: str) -> list[list[str]]:
    """The `degrade`/`sr` command lines of a shell text, as tokens: comments dropped, `\\` continuations joined,
    a `torchrun ... --no-python` launcher removed (its command runs in one process here)."""
    lines = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        tokens = shlex.split(line, comments=True)
        if tokens and tokens[0] == "torchrun":
            tokens = tokens[tokens.index("--no-python") + 1 :]
        if tokens:
            assert tokens[0] in PROGRAMS, f"not a degrade or sr command: {line}"
            lines.append(tokens)
    return lines


def command_of(tokens: list[str]) -> click.Command:
    """The click command a token list names (the group itself for `degrade --help`)."""
    command = programs()[tokens[0]]
    for token in tokens[1:]:
        if not isinstance(command, click.Group) or token not in command.commands:
            break
        command = command.commands[token]
    return command


def tiny(tokens: list[str], *, dry_run: bool = False) -> list[str]:
    """`tokens` with every step count shrunk (N -> max(2, N // 1000): a --resume to 4000 still goes further than
    2000), 2 steps where the command trains and none are given, and `--dry-run` where asked and offered."""
    out = list(tokens)
    for i, token in enumerate(out[:-1]):
        if token in ("--steps", "--sr-steps"):
            out[i + 1] = str(max(2, int(out[i + 1]) // 1000))
    names = {p.name for p in command_of(tokens).params}
    for name, option in (("steps", "--steps"), ("sr_steps", "--sr-steps")):
        if name in names and option not in out and "--help" not in out:
            out += [option, "2"]
    if dry_run and "dry_run" in names and "--help" not in out:
        out.append("--dry-run")
    return out


def run(tokens: list[str]) -> Result:
    """Run one command line in-process; the result carries exit code, output and any exception."""
    return CliRunner().invoke(programs()[tokens[0]], tokens[1:], catch_exceptions=True)


def assert_ran(result: Result, tokens: list[str]) -> None:
    import traceback

    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    trace = "".join(traceback.format_exception(*result.exc_info)) if crashed else ""
    assert result.exit_code == 0, f"`{shlex.join(tokens)}` exited {result.exit_code}:\n{result.output}\n{trace}"


def write_inputs(root: Path) -> None:
    """The folders and files the documented lines name, as tiny generated images (HR 64 px, LR 16 px)."""
    write_images(root / "faces-hr", 16, 64, seed=1)  # realism needs 16 HR images (two halves)
    for name in ("faces-lr-web", "faces-lr", "held-out-lr"):
        write_images(root / name, 16, 16, seed=2)  # degrade eval needs 16 (two halves)
    write_images(root / "photos", 2, 24, seed=3)
    for name, seed in (("more.png", 4), ("extra.jpg", 5), ("face.jpg", 6)):
        write_images(root / "files", 1, 48, seed=seed, fmt=Path(name).suffix[1:])[0].rename(root / name)
    for i, name in enumerate(("baby", "bird")):  # Set5-style pairs: NAME_HR.png, NAME_LR.png
        write_images(root / "Set5", 1, 64, seed=7 + i)[0].rename(root / "Set5" / f"{name}_HR.png")
        write_images(root / "Set5", 1, 16, seed=9 + i)[0].rename(root / "Set5" / f"{name}_LR.png")
