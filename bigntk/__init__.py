"""bigntk: finite-width neural network kernels for any JAX function.

The public API is what this module re-exports; everything else may change.

``import bigntk`` loads JAX and the kernel functions only. The builder (Ray),
the store (Zarr) and the solvers (Dask, SciPy) load on first use of one of
their names (``bigntk.build_kernel``, ``bigntk.open_kernel``, ``bigntk.solve``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bigntk import errors as errors
from bigntk import stax as stax
from bigntk.empirical import DEFAULT_NTK_IMPLEMENTATION as DEFAULT_NTK_IMPLEMENTATION
from bigntk.empirical import EmpiricalKernel as EmpiricalKernel
from bigntk.empirical import NtkImplementation as NtkImplementation
from bigntk.empirical import cpu_compiler_options as cpu_compiler_options
from bigntk.empirical import empirical_kernel_fn as empirical_kernel_fn
from bigntk.empirical import empirical_nngp_fn as empirical_nngp_fn
from bigntk.empirical import empirical_ntk_fn as empirical_ntk_fn
from bigntk.empirical import empirical_ntk_vp_fn as empirical_ntk_vp_fn
from bigntk.taylor import linearize as linearize
from bigntk.taylor import taylor_expand as taylor_expand

if TYPE_CHECKING:  # what the lazy names below resolve to
    from bigntk import solve as solve
    from bigntk.build import BuildResult as BuildResult
    from bigntk.build import build_kernel as build_kernel
    from bigntk.solve import kernel_regression as kernel_regression
    from bigntk.store import open_kernel as open_kernel

__version__ = "0.1.0.dev0"

# name -> (module, attribute or None for the module itself), imported on first use
_LAZY: dict[str, tuple[str, str | None]] = {
    "BuildResult": ("bigntk.build", "BuildResult"),
    "build_kernel": ("bigntk.build", "build_kernel"),
    "kernel_regression": ("bigntk.solve", "kernel_regression"),
    "open_kernel": ("bigntk.store", "open_kernel"),
    "solve": ("bigntk.solve", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'bigntk' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = importlib.import_module(module)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BuildResult",
    "DEFAULT_NTK_IMPLEMENTATION",
    "EmpiricalKernel",
    "NtkImplementation",
    "empirical_kernel_fn",
    "empirical_nngp_fn",
    "empirical_ntk_fn",
    "empirical_ntk_vp_fn",
    "build_kernel",
    "cpu_compiler_options",
    "errors",
    "linearize",
    "open_kernel",
    "kernel_regression",
    "solve",
    "stax",
    "taylor_expand",
]
