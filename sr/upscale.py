"""Upscale images of any size with a trained Low-to-High generator, in overlapping tiles.

The generator is fully convolutional, and at inference its batch norm uses running statistics, so an output
pixel depends only on the LR pixels within a fixed radius (the network's receptive field, `context`). An
image is cut into cores of `tile` x `tile` LR pixels; each core is run with `overlap` pixels of real image
around it (all windows the same size, shifted inwards at the image's edges so they can be batched), and only
the core's part of the output is kept. With `overlap >= context` the result equals a whole-image pass; the
memory the network needs depends on the tile and the batch of tiles, never on the image size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from degrader.checkpoint import resolve_checkpoint
from degrader.device import resolve_device
from degrader.errors import UserError
from degrader.files import atomic_path, sha256_file
from degrader.images import load_rgb, to_tensor
from degrader.progress import Progress
from degrader.scan import output_jobs
from sr.model import SR_FILE, LowToHighConfig, LowToHighGenerator, load_sr_generator

DEFAULT_TILE = 64  # LR pixels per tile core; at least the model's training size


def tile_windows(length: int, core: int, margin: int) -> tuple[int, list[tuple[int, int, int]]]:
    """Cut one image axis into cores and the windows that hold them.

    Returns the window length T (the same for all windows) and one (w0, c0, c1) per core: the core is
    [c0, c1), its window [w0, w0 + T). Every core has at least `margin` pixels of window on each side, except
    where it touches the image's edge, so the network sees the same neighbourhood as in a whole-image pass.
    """
    window = min(length, core + 2 * margin)
    cuts = []
    for c0 in range(0, length, core):
        c1 = min(c0 + core, length)
        w0 = min(max(c0 - margin, 0), length - window)  # shifted inwards at the edges, never clipped
        cuts.append((w0, c0, c1))
    return window, cuts


def receptive_radius(net: torch.nn.Module, scale: int, device: torch.device, limit: int = 512) -> int | None:
    """How far (in LR pixels) an output pixel can look: the largest radius with a non-zero input gradient.

    Measured on random input, growing the input until the dependence stops short of its border. None when
    even `limit` pixels are not enough (a network with a global operation: no tiling is exact then).
    """
    n = 32
    gen = torch.Generator().manual_seed(0)
    while n <= limit:
        c = n // 2
        x = (torch.rand(1, 3, n, n, generator=gen) * 2 - 1).to(device).requires_grad_(True)
        with torch.enable_grad():
            y = net(x)  # (1, 3, n*s, n*s)
            (grad,) = torch.autograd.grad(y[..., c * scale : (c + 1) * scale, c * scale : (c + 1) * scale].sum(), x)
        used = grad.abs().sum(dim=(0, 1)) > 0  # (n, n)
        rows = torch.nonzero(used.any(dim=1)).flatten()
        cols = torch.nonzero(used.any(dim=0)).flatten()
        if rows.min() > 0 and cols.min() > 0 and rows.max() < n - 1 and cols.max() < n - 1:
            return int(max(c - rows.min(), rows.max() - c, c - cols.min(), cols.max() - c))
        n *= 2
    return None


class SuperResolver:
    """A trained Low-to-High generator, ready to upscale images of any size.

    Example:
        >>> sr = SuperResolver.load("runs/sr-faces")
        >>> hr = sr.upscale(lr)  # lr (B, 3, h, w) in [0, 1] -> (B, 3, h * 4, w * 4) in [0, 1]
    """

    def __init__(self, net_g: LowToHighGenerator, name: str = "sr", sha256: str = "", step: int = 0):
        self.net_g = net_g.eval()
        self.config: LowToHighConfig = net_g.config
        self.name, self.sha256, self.step = name, sha256, step
        self._context: int | None = -1  # measured on first use

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> SuperResolver:
        """Load from an `sr train` run directory or its `sr.safetensors` file, onto `device` ("auto": CUDA if any).

        Raises:
            UserError: missing file, not an SR checkpoint, weights that do not fit, or CUDA asked for but absent.
        """
        net_g, meta = load_sr_generator(path, resolve_device(device) if isinstance(device, str) else device)
        path, file = Path(path), resolve_checkpoint(path, SR_FILE)
        name = path.name if path.is_dir() else path.stem
        return cls(net_g, name=name, sha256=sha256_file(file), step=int(meta.get("step", 0)))

    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def lr_size(self) -> int:
        """The LR size the network was trained on."""
        return self.config.lr_size

    @property
    def device(self) -> torch.device:
        return next(self.net_g.parameters()).device

    @property
    def context(self) -> int | None:
        """Receptive-field radius in LR pixels: the overlap that makes tiling exact (None: no tiling is exact)."""
        if self._context == -1:
            # The field depends on the layout, not the weights: measure it on a thin copy with random weights
            # (none zero, so no path is cut), which is cheap even for the paper preset.
            with torch.random.fork_rng(devices=[]), torch.no_grad():  # leave the caller's RNG stream alone
                torch.manual_seed(0)
                probe = LowToHighGenerator(replace(self.config, width=4)).eval()
                for p in probe.parameters():
                    if not p.any():
                        torch.nn.init.normal_(p)
            self._context = receptive_radius(probe, self.scale, torch.device("cpu"))
        return self._context

    def _run(self, lr: torch.Tensor) -> torch.Tensor:
        sr = self.net_g(lr.to(self.device, torch.float32) * 2 - 1)  # (n, 3, h*s, w*s) about [-1, 1]
        return ((sr + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def upscale(
        self, lr: torch.Tensor, tile: int | None = None, overlap: int | None = None, batch_size: int = 8
    ) -> torch.Tensor:
        """Upscale LR images by `scale`, tile by tile.

        Args:
            lr: (B, 3, h, w) images in [0, 1] (or one (3, h, w) image), on any device.
            tile: LR pixels per tile core; default max(64, the training size). Images no bigger run whole.
            overlap: LR pixels of context around each core; default `context`, which makes the result equal
                to a whole-image pass. Smaller is faster, with faint seams.
            batch_size: tiles per forward pass; with `tile` it bounds the memory the network needs.

        Returns:
            (B, 3, h * scale, w * scale) in [0, 1] (or (3, H, W)), on the device of `lr`.
        """
        single = lr.ndim == 3
        lr = lr.unsqueeze(0) if single else lr
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise ValueError(f"expected LR images (B, 3, h, w), got {tuple(lr.shape)}")
        tile = max(self.lr_size, DEFAULT_TILE) if tile is None else int(tile)
        if tile < 1 or batch_size < 1:
            raise ValueError(f"tile and batch_size must be positive, got {tile} and {batch_size}")
        b, _, h, w = lr.shape
        s = self.scale
        if max(h, w) > tile:
            margin = self.context if overlap is None else int(overlap)
            if margin is None:  # no finite receptive field: only a whole-image pass is exact
                tile, margin = max(h, w), 0
        else:
            margin = 0
        th, rows = tile_windows(h, tile, margin)
        tw, cols = tile_windows(w, tile, margin)
        jobs = [(i, r, c) for i in range(b) for r in rows for c in cols]
        out = torch.empty(b, 3, h * s, w * s, dtype=torch.float32, device=lr.device)  # (B, 3, h*s, w*s)
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            windows = torch.stack([lr[i, :, r[0] : r[0] + th, c[0] : c[0] + tw] for i, r, c in chunk])
            sr = self._run(windows).to(lr.device)  # (n, 3, th*s, tw*s)
            for (i, (r0, r1, r2), (c0, c1, c2)), y in zip(chunk, sr, strict=True):
                core = y[:, (r1 - r0) * s : (r2 - r0) * s, (c1 - c0) * s : (c2 - c0) * s]
                out[i, :, r1 * s : r2 * s, c1 * s : c2 * s] = core
        return out[0] if single else out


def upscale_files(
    model: SuperResolver,
    inputs: Sequence[Path],
    out: Path,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    on_progress: Progress | None = None,
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Upscale image files and folders (searched recursively) into 8-bit PNGs under `out`, keeping the folders'
    layout. Each PNG is complete under its final name; an input is never written over.

    Unreadable inputs do not stop the others: they are returned with the reason.

    Returns:
        The PNGs written, and (input, reason) for every input that failed.

    Raises:
        UserError: `out` is a file, or is not empty and `overwrite` is not set.
    """
    out = Path(out)
    jobs, failed, sources = output_jobs(inputs, out, overwrite)
    written: list[Path] = []
    used: set[Path] = set()
    for i, (path, rel) in enumerate(jobs):
        target = out / rel.with_suffix(".png")
        if target in used:  # photo.jpg and photo.png in one folder
            target = out / rel.with_name(rel.name + ".png")
        try:
            if target.resolve() in sources:
                raise UserError(f"the output {target} would overwrite an input; choose another --out.")
            sr = model.upscale(to_tensor(load_rgb(path))[None], tile=tile, overlap=overlap, batch_size=batch_size)[0]
            pixels = sr.mul(255).round().to("cpu", torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                Image.fromarray(pixels, "RGB").save(tmp, format="PNG")
            written.append(target)
            used.add(target)
        except (UserError, OSError) as e:
            failed.append((path, str(e).removeprefix(f"{path}: ")))
        if on_progress is not None:
            on_progress(i + 1, len(jobs), {})
    return written, failed
