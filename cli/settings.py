"""`--config FILE`, `--set key=value` and `--show-config`: the settings a run takes beyond its command-line options.

Each training command's options are what a user picks per run (data, output, preset, steps, device); every other
field of its config dataclass (loss weights, discriminator, validation, ...) is a setting. Later layers win:
preset < the run's own config.json (`--resume`) < `--config` < `--set` < options given on the command line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cli.options import as_str
from cli.progress import console, user_errors

ACTIONS = ("out", "resume", "overwrite")  # what one invocation does, never taken from a file
GIVEN = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT, None)  # None: ctx.invoke


def settings_options(f):
    """--config, --set and --show-config."""
    options = [
        click.option(
            "--config",
            "config_file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Settings from a JSON or TOML file (a run's config.json is one); --show-config lists the keys.",
        ),
        click.option(
            "--set",
            "sets",
            multiple=True,
            metavar="KEY=VALUE",
            help="One setting, over --config; dotted into nested ones, e.g. --set loss.exposure=100. Repeatable.",
        ),
        click.option(
            "--show-config",
            is_flag=True,
            help="List every setting (type, default, what it does) and the value this command line gives; run nothing.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def make_config(
    cls: type, options: dict[str, Any], *, needed: tuple[str, ...] = (), base: Callable[[str], dict] | None = None
) -> Any:
    """The command's config dataclass from its layers, or None after --show-config has listed it.

    Args:
        cls: the config dataclass (`FitConfig`, `SRTrainConfig`, ...), which also checks every setting.
        options: the command's parameters (and any config field a caller passes to `ctx.invoke` by name).
        needed: options that must be given unless --resume takes them from the run in --out.
        base: the preset's settings for a preset name (the lowest layer above the dataclass defaults).
    """
    from degrader.config_io import build, merge, parse_sets, read_config_file, run_settings

    ctx = click.get_current_context()
    config_file, sets, show = options.pop("config_file", None), options.pop("sets", ()), options.pop("show_config")
    options = as_str(options)
    sources = {name: ctx.get_parameter_source(name) for name in options}
    given = {k: v for k, v in options.items() if sources[k] in GIVEN and v is not None}
    defaults = {k: v for k, v in options.items() if k not in given and v is not None}
    with user_errors():
        from_file = read_config_file(config_file) if config_file else {}
        resumed = run_settings(cls, Path(options["out"])) if options.get("resume") and options.get("out") else {}
        from_file, resumed = ({k: v for k, v in layer.items() if k not in ACTIONS} for layer in (from_file, resumed))
        top = merge(resumed, from_file, parse_sets(sets), given)
        preset = top.get("preset", defaults.get("preset"))
        data = merge(defaults, base(preset) if base else {}, top)
        if show:
            show_config(cls, data)
            return None
        missing = [name for name in ("out", *needed) if data.get(name) in (None, [], ())]
        opts = {p.name: p.opts[0] for p in ctx.command.params}
        flags = ", ".join(opts.get(name, name) for name in missing)
        if "out" in missing:
            raise click.UsageError("Missing option '--out'.")
        if missing and options.get("resume"):
            raise click.UsageError(
                f"--resume: --out {data['out']} holds no run to continue; drop --resume, give {flags}."
            )
        if missing:
            raise click.UsageError(f"missing option {flags} (or --resume a run in --out that has it).")
        return build(cls, data)


def show_config(cls: type, data: dict[str, Any]) -> None:
    """Print every setting of `cls`: key, type, default, the value these layers give, and its comment."""
    import dataclasses
    import typing

    from degrader.config_io import build, settings_table

    hints = typing.get_type_hints(cls)
    required = [f for f in dataclasses.fields(cls) if f.default is f.default_factory is dataclasses.MISSING]
    placeholders = {f.name: [] if typing.get_origin(hints[f.name]) is list else "" for f in required}
    config = build(cls, placeholders | data)
    ctx = click.get_current_context()
    console.print(
        f"{ctx.command_path} settings: key, type, default, value here, what it does. Set any with --set KEY=VALUE "
        "or in --config FILE; options given on the command line win. *: not the default.",
        highlight=False,
        soft_wrap=True,
    )
    for key, tp, default, value, comment in settings_table(cls, config):
        shown = json.dumps(value)
        mark = "" if value == default else " *"
        line = f"{key:<20} {tp:<14} {json.dumps(default):<14} {shown + mark:<22} {comment}"
        console.print(line, highlight=False, markup=False, soft_wrap=True)
