"""Super-resolution on top of the degrader: the Low-to-High GAN (paper sections 3.4-3.6).

Top-level names are imported lazily, so `import sr` stays free of torch until one is used.
"""

from importlib import import_module

_LAZY = {
    "SuperResolver": "sr.upscale",
    "LowToHighConfig": "sr.model",
    "LowToHighGenerator": "sr.model",
    "SRTrainConfig": "sr.train",
    "FinetuneConfig": "sr.finetune",
    "psnr": "sr.metrics",
    "ssim": "sr.metrics",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sr' has no attribute {name!r}")
