"""Run settings from files and `key=value` overrides, checked against the config dataclasses themselves.

A setting is named by its dataclass field, dotted into nested configs (`loss.exposure`). The layers a
command merges (a preset, `--config FILE`, `--set key=value`, its own options) are plain dicts; `build`
turns the merged dict into the dataclass, naming any unknown key or wrong type in one line.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import re
import types
import typing
from dataclasses import MISSING
from pathlib import Path
from typing import Any

from degrader.errors import UserError

# The ranges the command-line options checked before these settings moved to --config/--set (by field name).
AT_LEAST = {
    **{"steps": 1, "batch_size": 1, "log_every": 1, "sample_every": 1, "checkpoint_every": 1, "eval_every": 1},
    **{"workers": 0, "cache_mb": 0, "warmup_steps": 0, "d_patch": 0, "alpha": 0, "beta": 0, "val_split": 0},
    **{"hr_size": 8, "lr_size": 4, "val_n": 8, "n": 8, "per_image": 1, "grid_images": 1, "features_size": 8},
}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or TOML (by its `.toml` suffix) file of settings; a run's own config.json is one.

    Raises:
        UserError: the file is missing, unreadable, not valid JSON/TOML, or not a table of settings.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(
            f"--config {path}: cannot read it ({e.__class__.__name__}); give a JSON or TOML file."
        ) from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib  # Python 3.11+

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ImportError:
        raise UserError(f"--config {path}: TOML needs Python 3.11 or later; give the settings as JSON.") from None
    except ValueError as e:  # json.JSONDecodeError and tomllib.TOMLDecodeError
        raise UserError(f"--config {path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {e}.") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: holds a {type(data).__name__}, not a table of settings (key: value).")
    return data


def parse_sets(items: typing.Iterable[str]) -> dict[str, Any]:
    """`["loss.exposure=100", "generator=paper"]` as nested dicts; each value parsed as JSON when it is JSON
    (numbers, true/false, null, lists, quoted strings), else kept as the string it is.

    Raises:
        UserError: an item without `=` or with an empty key.
    """
    data: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key.strip() or not all(key.strip().split(".")):
            raise UserError(f"--set {item!r}: give key=value, e.g. --set loss.exposure=100.")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        *parents, leaf = key.strip().split(".")
        node = data
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {item!r}: {name} is set to a value and used as a group at once.")
        node[leaf] = value
    return data


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """The layers merged left to right, later ones winning; nested dicts merge key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
    return out


def build(cls: type, data: dict[str, Any], source: str = "--config/--set", prefix: str = "") -> Any:
    """`cls(**data)`, each value checked against its field's type (ints taken as floats where a float is due,
    nested dataclasses from dicts) and every float field a float, so the JSON it writes is the same however
    the value was given.

    Raises:
        UserError: an unknown key (with the close ones), a value of the wrong type or range, or one the
            dataclass rejects; the message starts with `source` and names the dotted key.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=4, cutoff=0.5)
            hint = f"did you mean {', '.join(prefix + c for c in close)}?" if close else "see --show-config"
            raise UserError(f"{source}: {prefix}{key} is no setting here; {hint}")
    values = {k: _check(prefix + k, v, hints[k], source) for k, v in data.items()}
    try:
        built = cls(**values)
    except (TypeError, ValueError) as e:
        raise UserError(f"{source}: {prefix.rstrip('.') or cls.__name__}: {e}.") from None
    for f in dataclasses.fields(built):  # defaults and __post_init__'s values too: 256 becomes 256.0
        value = getattr(built, f.name)
        if hints[f.name] in (float, float | None) and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(built, f.name, float(value))
    return built


def _check(key: str, value: Any, tp: Any, source: str) -> Any:
    """`value` as type `tp`, or a UserError naming `key`."""
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return build(tp, value, source, prefix=key + ".")
    elif typing.get_origin(tp) in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(options) == 1:
            return _check(key, value, options[0], source)
    elif tp is Any:
        return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp in (int, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (tp is float or isinstance(value, int)):
            least = AT_LEAST.get(key.rsplit(".", 1)[-1])
            if least is not None and value < least:
                raise UserError(f"{source}: {key} is {value}; it must be at least {least}.")
            return tp(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis and isinstance(value, (list, tuple)):  # tuple[X, ...]
            return tuple(_check(f"{key}[{i}]", v, args[0], source) for i, v in enumerate(value))
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(_check(f"{key}[{i}]", v, a, source) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    elif typing.get_origin(tp) is list:
        (arg,) = typing.get_args(tp)
        if isinstance(value, (list, tuple)):
            return [_check(f"{key}[{i}]", v, arg, source) for i, v in enumerate(value)]
    raise UserError(f"{source}: {key} is {json.dumps(value)}, not {type_name(tp)}.")


def type_name(tp: Any) -> str:
    """`int`, `float|None`, `tuple[float,float]`: a type as one word, as the settings table shows it."""
    return tp.__name__ if isinstance(tp, type) and typing.get_origin(tp) is None else str(tp).replace(" ", "")


def settings_table(cls: type, value: Any, prefix: str = "") -> list[tuple[str, str, Any, Any, str]]:
    """(dotted key, type, default, value, comment) for every setting of `cls`, nested configs expanded; the
    comment is the first line of the field's comment in the source, so the table and the code say the same."""
    hints = typing.get_type_hints(cls)
    comments = dict(re.findall(r"^    (\w+): [^#\n]*#\s*(.*)$", inspect.getsource(cls), flags=re.M))
    rows = []
    for f in dataclasses.fields(cls):
        tp, current = hints[f.name], getattr(value, f.name)
        nested = _nested(tp)
        if nested is not None and dataclasses.is_dataclass(current):
            rows += settings_table(nested, current, prefix + f.name + ".")
            continue
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        rows.append((prefix + f.name, type_name(tp), default, current, comments.get(f.name, "")))
    return rows


def run_settings(cls: type, out: Path) -> dict[str, Any]:
    """The settings of the run in `out` (its config.json) that `--resume` continues with, as `cls` fields.

    A key the file lacks in a nested config (a setting added to the code since the run was written) takes
    that dataclass's default, which the run had, not a preset's; so does a top-level key `cls.BEFORE` names (its
    value before the setting existed); keys `cls` no longer has are left out.
    Without a readable config there is nothing to take: the library says why the run cannot continue.
    """
    try:
        saved = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict):
        return {}
    hints = typing.get_type_hints(cls)
    settings = {}
    for f in dataclasses.fields(cls):
        if f.name not in saved:
            continue
        value = saved[f.name]
        nested = next(
            (t for t in (hints[f.name], *typing.get_args(hints[f.name])) if dataclasses.is_dataclass(t)), None
        )
        if nested is not None and isinstance(value, dict):
            value = {
                g.name: g.default for g in dataclasses.fields(nested) if g.default is not dataclasses.MISSING
            } | value
        settings[f.name] = value
    return {k: v for k, v in getattr(cls, "BEFORE", {}).items() if k not in saved} | settings


def _nested(tp: Any) -> type | None:
    """The dataclass a field of type `tp` holds (`LossConfig` for `LossConfig | None`), or None."""
    return next((t for t in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(t)), None)
