"""The Ray runtime that builds kernels block by block into a kernel store.

The driver (:func:`build_kernel`) plans the blocks, opens the store through
:mod:`bigntk.store`, and schedules the missing blocks on Ray actors; each actor
computes its blocks with :mod:`bigntk.empirical` and writes them to the store.
"""

from bigntk.build._compute import BlockKernel as BlockKernel
from bigntk.build._data import MemorySource as MemorySource
from bigntk.build._data import Source as Source
from bigntk.build._data import as_source as as_source
from bigntk.build._describe import plan_layout as plan_layout
from bigntk.build._describe import resolve_vmap_axes as resolve_vmap_axes
from bigntk.build._driver import build_kernel as build_kernel
from bigntk.build._resources import WorkerResources as WorkerResources
from bigntk.build._result import BuildResult as BuildResult
from bigntk.build._spec import KINDS as KINDS
from bigntk.build._verify import Check as Check
from bigntk.build._verify_store import VerifyReport as VerifyReport
from bigntk.build._verify_store import verify_store as verify_store

__all__ = [
    "KINDS",
    "BlockKernel",
    "BuildResult",
    "Check",
    "MemorySource",
    "Source",
    "VerifyReport",
    "WorkerResources",
    "as_source",
    "build_kernel",
    "plan_layout",
    "resolve_vmap_axes",
    "verify_store",
]

_MOVED = {
    "KernelStore": ("bigntk.store", "KernelStore"),
    "BuildConfig": ("bigntk.config", "BuildConfig"),
    "load_config": ("bigntk.config", "load_config"),
    "load_builtin": ("bigntk.config", "load_builtin"),
}


def __getattr__(name: str):
    """Names that moved to :mod:`bigntk.store` and :mod:`bigntk.config` (deprecated here)."""
    if name in _MOVED:
        import importlib
        import warnings

        module, attr = _MOVED[name]
        warnings.warn(
            f"bigntk.build.{name} moved to {module}.{attr}; import it from there "
            "(the old name will be removed).",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'bigntk.build' has no attribute {name!r}")
