"""bigntk: finite-width neural network kernels for any JAX function.

The public API is what this module re-exports; everything else may change.
"""

from bigntk import errors as errors
from bigntk import solve as solve
from bigntk import stax as stax
from bigntk.build import BuildResult as BuildResult
from bigntk.build import build_kernel as build_kernel
from bigntk.empirical import DEFAULT_NTK_IMPLEMENTATION as DEFAULT_NTK_IMPLEMENTATION
from bigntk.empirical import EmpiricalKernel as EmpiricalKernel
from bigntk.empirical import NtkImplementation as NtkImplementation
from bigntk.empirical import cpu_compiler_options as cpu_compiler_options
from bigntk.empirical import empirical_kernel_fn as empirical_kernel_fn
from bigntk.empirical import empirical_nngp_fn as empirical_nngp_fn
from bigntk.empirical import empirical_ntk_fn as empirical_ntk_fn
from bigntk.empirical import empirical_ntk_vp_fn as empirical_ntk_vp_fn
from bigntk.solve import kernel_regression as kernel_regression
from bigntk.store import open_kernel as open_kernel
from bigntk.taylor import linearize as linearize
from bigntk.taylor import taylor_expand as taylor_expand

__version__ = "0.1.0.dev0"

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
