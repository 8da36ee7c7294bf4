"""degrader: learn how real cameras and the web degrade images, and turn it into SR training data.

The top-level names are imported lazily so that `import degrader.errors` (and the CLI's `--help`) stays
instant; `degrader.fit` or `degrader.Degrader` import torch on first use. Importing it sets OpenMP's passive wait
policy for torch (`degrader.threads`): import degrader before torch, or call `degrader.threads.configure()`.
"""

from importlib import import_module

from degrader.threads import prepare_openmp

prepare_openmp()  # OpenMP's passive wait policy, unless the user set one; takes effect only before `import torch`

__version__ = "0.1.0"

_LAZY = {
    "fit": "degrader.train",
    "FitConfig": "degrader.train",
    "plan_fit": "degrader.train",
    "Degrader": "degrader.checkpoint",
    "HighToLowConfig": "degrader.model",
    "HighToLowGenerator": "degrader.model",
    "LossConfig": "degrader.gan",
    "make_classical": "degrader.classical",
    "export_shards": "degrader.export",
    "ExportConfig": "degrader.export",
    "plan_export": "degrader.export",
    "load_degrader": "degrader.checkpoint",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'degrader' has no attribute {name!r}")
