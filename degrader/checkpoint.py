"""One checkpoint format for every model: tensors in safetensors, config and metadata as JSON in its header.

A checkpoint is one file, written atomically, so a crash can never pair new weights with an old config.
Loading parses the safetensors header and never unpickles anything.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from degrader import __version__
from degrader.classical import CLASSICAL, make_classical
from degrader.device import resolve_device
from degrader.errors import UserError
from degrader.files import atomic_path, sha256_file
from degrader.model import HighToLowConfig, HighToLowGenerator
from degrader.nets import FORMAT, check_fits, upgrade_state_dict  # FORMAT: bump when old code cannot read a file
from degrader.structured import StructuredConfig, StructuredGenerator

META_KEY = "degrader"


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write `tensors` and the JSON-serialisable `meta` (must hold a "kind") to one safetensors file."""
    meta = {"format": FORMAT, "version": __version__, **meta}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={META_KEY: json.dumps(meta, sort_keys=True)})


def load_checkpoint(
    path: str | Path, kind: str, *, option: str = "--checkpoint"
) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint written by `save_checkpoint`, checking that it holds a `kind` model.

    Raises:
        UserError: the file is missing, not a safetensors file, not ours, of another kind or a newer format.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{option} {path}: no such checkpoint file; give a run directory or a .safetensors file.")
    try:
        with safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(
            f"{option} {path} is not a readable safetensors checkpoint ({e}); is the file corrupt?"
        ) from None
    try:
        meta = json.loads(header[META_KEY])
    except (KeyError, json.JSONDecodeError):
        raise UserError(f"{option} {path} is a safetensors file but not a degrader checkpoint.") from None
    if not isinstance(meta, dict):
        raise UserError(f"{option} {path}: its degrader metadata is not a JSON object; is the file corrupt?")
    if meta.get("kind") != kind:
        raise UserError(f"{option} {path} holds a {meta.get('kind')!r} model, but a {kind!r} model is needed here.")
    return upgrade_state_dict(tensors, meta, f"{option} {path}"), meta  # refuses unknown formats


def module_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def load_module(module: nn.Module, prefix: str, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Load the `prefix.*` tensors into `module`, with a clear error when the shapes do not match."""
    state = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"{path} does not fit this model ({first}); was it written with other settings?") from None


def build_network(
    config_cls: type, net_cls: type, tensors: dict[str, torch.Tensor], meta: dict, path: Path, option: str
) -> nn.Module:
    """Rebuild the network a checkpoint describes (its "config") and load its `net_g.*` weights."""
    try:
        config = config_cls.from_dict(meta["config"], f"{option} {path}")
        check_fits(net_cls, config, tensors, "net_g", f"{option} {path}")  # before allocating the network
        net = net_cls(config)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{option} {path} holds an unusable model config ({e}); was it written by this tool?") from None
    load_module(net, "net_g", tensors, path)
    return net


# --- training state: networks, optimizers and random generators, for exact resume -------------------------


def pack_state(
    modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer], generators: dict[str, torch.Generator]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten networks, optimizer states and RNG states into tensors plus JSON metadata.

    Trainers draw all randomness from the named `generators` (data randomness is a function of the step),
    so the global RNG is not part of the state.
    """
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"optimizers": {}}
    for name, module in modules.items():
        tensors.update(module_tensors(name, module))
    for name, opt in optimizers.items():
        scalars = {}
        for idx, slots in opt.state_dict()["state"].items():
            for slot, value in slots.items():
                if torch.is_tensor(value):
                    tensors[f"{name}.{idx}.{slot}"] = value
                else:
                    scalars[f"{idx}.{slot}"] = value
        meta["optimizers"][name] = scalars
    for name, gen in generators.items():
        tensors[f"rng.{name}"] = gen.get_state()
    return tensors, meta


def unpack_state(
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    generators: dict[str, torch.Generator],
    path: Path,
) -> None:
    """Inverse of `pack_state`: restore everything in place. Param groups (lr, betas) come from the config."""
    for name, module in modules.items():
        load_module(module, name, tensors, path)
    for name, opt in optimizers.items():
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith(name + "."):
                idx, slot = key[len(name) + 1 :].split(".", 1)
                state.setdefault(int(idx), {})[slot] = value
        for key, value in meta["optimizers"][name].items():
            idx, slot = key.split(".", 1)
            state.setdefault(int(idx), {})[slot] = value
        opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    for name, gen in generators.items():
        gen.set_state(tensors[f"rng.{name}"])


# --- degraders: the protocol, the learned one, and loading either -----------------------------------------


class DegraderLike(Protocol):
    """What `export_shards` and `sr train` need of a degrader, learned (`Degrader`) or classical (`Bicubic`)."""

    @property
    def name(self) -> str: ...  # recorded in shards and manifests

    @property
    def sha256(self) -> str: ...  # of the weights file; "" for a classical degrader

    @property
    def scale(self) -> int: ...  # HR size / LR size

    @property
    def hr_size(self) -> int | None: ...  # the HR size it takes; None: any size divisible by `scale`

    def degrade(self, hr: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """(B, 3, H, W) HR in [0, 1] on any device, one seed per image -> (B, 3, H/s, W/s) LR in [0, 1]."""
        ...


# The High-to-Low generators, by the name a checkpoint's "generator" field holds (absent: "paper").
GENERATORS = {"paper": (HighToLowConfig, HighToLowGenerator), "structured": (StructuredConfig, StructuredGenerator)}
DEGRADER_FILE = "degrader.safetensors"
BEST_FILE = "best.safetensors"  # the weights `fit`'s validation scored best; preferred in a run directory
DEGRADER_KIND = "high-to-low"


def noise_from_seeds(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """One z ~ N(0, I) per seed, drawn on the CPU so a seed gives the same z on every device. (B, z_dim)."""
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def resolve_checkpoint(path: str | Path, filename: str, option: str = "--checkpoint") -> Path:
    """A run directory means the checkpoint file inside it; a file path is taken as it is.

    Raises:
        UserError: the directory holds another model's checkpoint (e.g. a degrader run given to `sr`).
    """
    path = Path(path)
    if not path.is_dir():
        return path
    file = path / filename
    others = sorted(p.name for p in path.glob("*.safetensors") if p.name not in (filename, "state.safetensors"))
    if not file.exists() and others:
        raise UserError(f"{option} {path} holds {', '.join(others)}, not {filename}; is it the other kind of run?")
    return file


class Degrader:
    """A trained High-to-Low generator: maps HR images and integer seeds to realistic LR images.

    Example:
        >>> deg = Degrader.load("runs/faces")
        >>> lr = deg.degrade(hr, seeds=[0, 1, 2])  # hr (3, 3, 64, 64) in [0, 1] -> lr (3, 3, 16, 16)
    """

    def __init__(
        self, net_g: HighToLowGenerator | StructuredGenerator, name: str = "degrader", sha256: str = "", step: int = 0
    ):
        self.net_g = net_g.eval()
        self.config: HighToLowConfig | StructuredConfig = net_g.config
        self.name = name
        self.sha256 = sha256
        self.step = step
        self.file: Path | None = None  # the checkpoint it was loaded from

    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def hr_size(self) -> int:
        return self.config.hr_size

    @property
    def device(self) -> torch.device:
        return next(self.net_g.parameters()).device

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Degrader:
        """Load from a `degrade fit` run directory or a checkpoint file.

        A run directory gives its `best.safetensors` when validation kept one, else `degrader.safetensors` (the
        last step); `step` tells which training step the weights are from, `file` which file they came from.
        """
        file = resolve_checkpoint(path, DEGRADER_FILE, "--degrader")
        if Path(path).is_dir() and (Path(path) / BEST_FILE).is_file():
            file = Path(path) / BEST_FILE
        tensors, meta = load_checkpoint(file, DEGRADER_KIND, option="--degrader")
        generator = meta.get("generator", "paper")
        if generator not in GENERATORS:
            raise UserError(f"--degrader {file}: unknown generator {generator!r:.40}; written by a newer tool?")
        net_g = build_network(*GENERATORS[generator], tensors, meta, file, "--degrader")
        name = Path(path).name if Path(path).is_dir() else file.stem
        degrader = cls(net_g.to(device), name=name, sha256=sha256_file(file), step=meta.get("step", 0))
        degrader.file = file
        return degrader

    def save(self, path: str | Path, **meta: Any) -> None:
        """Write the generator and its config as a checkpoint `Degrader.load` reads."""
        generator = "structured" if isinstance(self.net_g, StructuredGenerator) else "paper"
        meta = {"kind": DEGRADER_KIND, "generator": generator, "config": vars(self.config), "step": self.step, **meta}
        save_checkpoint(path, module_tensors("net_g", self.net_g), meta)

    @torch.no_grad()
    def degrade(self, hr: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """Degrade (B, 3, H, H) HR images in [0, 1]; seed i fixes the noise of image i. Returns (B, 3, H/s, H/s).

        Args:
            hr: float images in [0, 1], of exactly `hr_size` x `hr_size` pixels (the structured generator takes
                any H, W divisible by the scale; `degrader.apply` tiles large images). To load one:
                `to_tensor(prepare(load_rgb(path), deg.hr_size, "resize", random.Random(0)))[None]`, all three
                from `degrader.images` (shorter side resized, centre crop, as `degrade fit` prepares images).
            seeds: one int per image (`len(seeds) == B`); the same seed gives the same LR.

        Raises:
            ValueError: HR of another size, or a number of seeds other than B.
        """
        fixed = not isinstance(self.net_g, StructuredGenerator)  # the structured one checks the shape itself
        if fixed and (hr.ndim != 4 or hr.shape[1] != 3 or hr.shape[-1] != self.hr_size or hr.shape[-2] != self.hr_size):
            raise ValueError(f"expected HR images (B, 3, {self.hr_size}, {self.hr_size}), got {tuple(hr.shape)}")
        if len(seeds) != hr.shape[0]:
            raise ValueError(f"got {len(seeds)} seeds for {hr.shape[0]} images")
        z = noise_from_seeds(seeds, self.config.z_dim).to(self.device)
        lr = self.net_g(hr.to(self.device) * 2 - 1, z)  # (B, 3, H/s, H/s)
        return ((lr + 1) / 2).clamp(0, 1)


def load_degrader(spec: str, scale: int | None, device: str = "auto") -> DegraderLike:
    """A classical degrader by name, or a learned one from a run directory or checkpoint file.

    Raises:
        UserError: `spec` is neither, or `scale` contradicts a learned degrader's.
    """
    if spec in CLASSICAL:
        return make_classical(spec, scale or 4)
    if not Path(spec).exists():
        raise UserError(
            f"--degrader {spec}: no such run directory or checkpoint, and not one of {', '.join(CLASSICAL)}."
        )
    degrader = Degrader.load(spec, device=resolve_device(device))
    if scale is not None and scale != degrader.scale:
        raise UserError(f"--scale {scale} differs from the degrader's scale {degrader.scale}; leave --scale out.")
    return degrader
