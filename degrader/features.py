"""FID and KID on features from a user-provided TorchScript extractor (never downloaded).

The extractor is any TorchScript module (`torch.jit.save`), for example the Inception network file common FID
tools use. It is called as `module(images)` with float32 (B, 3, H, W) images in [0, 1], resized first to
`size` x `size` when a size is given, and must return (B, D) features (a trailing (1, 1) is flattened).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from degrader.errors import UserError

TIMEOUT = 120.0  # seconds the extractor's first call may take (`--features-timeout`)


class FeatureExtractor:
    """A TorchScript feature network, run in batches without gradients.

    A TorchScript file is code: it runs as written. Its first call is time-boxed (`timeout`), so one that never
    returns ends in a UserError instead of a hang; every output is checked to be finite (B, D) features.

    Args:
        path: the `.pt` file written by `torch.jit.save`.
        size: resize images (bilinear, antialiased) to size x size first; None keeps their own size.
        batch_size: images per call.
        timeout: seconds the first call may take; None waits for ever.

    Raises:
        UserError: the file is missing or not TorchScript.
    """

    def __init__(
        self, path: str | Path, size: int | None = None, batch_size: int = 64, timeout: float | None = TIMEOUT
    ):
        path = Path(path)
        if not path.is_file():
            raise UserError(f"--features {path}: no such file; give a TorchScript feature extractor (.pt).")
        try:
            with warnings.catch_warnings():  # torch 2.14 deprecates TorchScript; FID tools still ship it
                warnings.simplefilter("ignore", FutureWarning)
                self.net = torch.jit.load(str(path), map_location="cpu").eval()
        except (RuntimeError, ValueError, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"--features {path} is not a TorchScript file ({first}); save it with torch.jit.save."
            ) from None
        self.path, self.size, self.batch_size, self.timeout = path, size, batch_size, timeout
        self.answered = False  # whether a call has returned: only the first one is time-boxed

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, D) float64 features."""
        out = []
        for i in range(0, len(images), self.batch_size):
            x = images[i : i + self.batch_size].float()
            if self.size is not None:
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
            out.append(self._forward(x) if self.answered or self.timeout is None else self._first_call(x))
            self.answered = True
        return torch.cat(out)

    @torch.no_grad()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> checked (B, D) float64 features."""
        where = f"--features {self.path}"
        try:
            f = self.net(x)
        except Exception as e:  # torch.jit.Error is no RuntimeError, and the file's code may raise anything
            lines = str(e).strip().splitlines()
            why = lines[-1] if lines else repr(e)
            raise UserError(f"{where} failed on {tuple(x.shape)} images in [0, 1]: {why}") from None
        if not isinstance(f, torch.Tensor):
            raise UserError(f"{where} returned a {type(f).__name__}, not a tensor; it must return (B, D) features.")
        if f.dim() == 0 or f.shape[0] != len(x) or f[0].numel() == 0:
            raise UserError(f"{where} returned shape {tuple(f.shape)} for {len(x)} images; it must return (B, D).")
        f = f.reshape(len(x), -1).double()
        if not torch.isfinite(f).all():
            raise UserError(f"{where} returned NaN or infinite features for {tuple(x.shape)} images in [0, 1].")
        return f

    def _first_call(self, x: torch.Tensor) -> torch.Tensor:
        """`_forward` in a thread, given `timeout` seconds: a file whose forward never returns cannot hang a run
        (the thread is left behind as a daemon; the process can still end)."""
        result: dict[str, Any] = {}

        def call() -> None:
            try:
                result["features"] = self._forward(x)
            except BaseException as e:  # handed to the caller's thread
                result["error"] = e

        thread = threading.Thread(target=call, name="features-first-call", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            atexit.register(_end_if_stuck, thread)
            raise UserError(
                f"--features {self.path}: its first call did not return within {self.timeout:g} s; the file is "
                "code and may never return: check it, or give a longer --features-timeout."
            )
        if "error" in result:
            raise result["error"]
        return result["features"]


def _end_if_stuck(thread: threading.Thread) -> None:
    """At exit: a forward still running in `thread` would make interpreter shutdown abort (SIGABRT, a core
    message after the one-line error), so the process ends here with the error's status, its output flushed."""
    if thread.is_alive():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (tiny negative eigenvalues from rounding -> 0)."""
    vals, vecs = torch.linalg.eigh(a)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians.

    tr (S1 S2)^(1/2) is computed as tr (S1^(1/2) S2 S1^(1/2))^(1/2): the same eigenvalues, but a symmetric
    matrix, so `eigh` applies (no scipy, no complex parts to discard).
    """
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    root1 = _sqrtm_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    tr_covmean = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + sigma1.trace() + sigma2.trace() - 2 * tr_covmean)


def fid(fake: torch.Tensor, real: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets (unbiased covariances)."""
    return frechet_distance(fake.mean(0), torch.cov(fake.double().T), real.mean(0), torch.cov(real.double().T))


def kid(
    fake: torch.Tensor, real: torch.Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel inception distance: the unbiased MMD^2 with the kernel (x.y / D + 1)^3 (Binkowski et al. 2018).

    Averaged over `subsets` random subsets of min(subset_size, N) features per set, as common FID tools do.

    Returns:
        (mean, standard deviation over the subsets).
    """
    fake, real = fake.double(), real.double()
    m = min(subset_size, len(fake), len(real))
    if m < 2:
        raise ValueError(f"KID needs at least 2 features per set, got {min(len(fake), len(real))}")
    d = fake.shape[1]
    gen = torch.Generator().manual_seed(seed)
    kernel = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    if m == len(fake) == len(real):
        subsets = 1  # every subset would be the whole set: one value, spread 0
    # Up to a few thousand features, the kernel matrices once; a subset's sums are then two mat-vec products with
    # its indicator vectors (100 subsets of 1,000 cost ~one product instead of 300: minutes -> seconds on a CPU).
    full = max(len(fake), len(real)) <= 4096
    if full:
        kxx_all, kyy_all, kxy_all = kernel(fake, fake), kernel(real, real), kernel(fake, real)
    values = []
    for _ in range(subsets):
        i, j = torch.randperm(len(fake), generator=gen)[:m], torch.randperm(len(real), generator=gen)[:m]
        if full:
            u, v = torch.zeros(len(fake), dtype=torch.float64), torch.zeros(len(real), dtype=torch.float64)
            u[i], v[j] = 1.0, 1.0
            sxx, syy, sxy = u @ kxx_all @ u, v @ kyy_all @ v, u @ kxy_all @ v
            txx, tyy = kxx_all.diagonal()[i].sum(), kyy_all.diagonal()[j].sum()
        else:
            x, y = fake[i], real[j]
            kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
            sxx, syy, sxy, txx, tyy = kxx.sum(), kyy.sum(), kxy.sum(), kxx.trace(), kyy.trace()
        values.append(float((sxx - txx + syy - tyy) / (m * (m - 1)) - 2 * sxy / (m * m)))
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std(correction=0))
