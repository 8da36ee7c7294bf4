"""Where a run computes: the device a `--device` choice names, bf16 autocast, channels_last and compile.

A leaf module (torch and `errors` only), so that loading a checkpoint, exporting, applying or evaluating can
choose a device without importing the trainers' bookkeeping in `degrader.run`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from degrader.errors import UserError


def resolve_device(choice: str) -> torch.device:
    """`auto` picks CUDA when available; asking for CUDA without it is a user error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu or auto.")
    return torch.device(choice)


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when asked for; a no-op otherwise (CPU runs stay float32 and reproducible)."""
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def accelerate(net: torch.nn.Module, config: Any) -> torch.nn.Module:
    """`config.channels_last` and `config.compile` applied to `net` in place; returns `net`.

    `nn.Module.compile` compiles the forward in place, so the state dict keeps the plain module's keys (no
    `_orig_mod.` prefix) and checkpoints load without compiling.
    """
    if config.channels_last:
        net.to(memory_format=torch.channels_last)
    if config.compile:
        net.compile()
    return net
