"""Empirical (finite-width) NNGP and NTK kernels of any JAX function.

Names, signatures and output conventions follow Neural Tangents'
``nt.empirical_*`` functions, so ``import bigntk as nt`` can replace
``import neural_tangents as nt`` for them.
"""

from bigntk.empirical._api import EmpiricalKernel as EmpiricalKernel
from bigntk.empirical._api import empirical_kernel_fn as empirical_kernel_fn
from bigntk.empirical._api import empirical_nngp_fn as empirical_nngp_fn
from bigntk.empirical._api import empirical_ntk_fn as empirical_ntk_fn

# For bigntk's other packages (the builder): part of this package's door, not of bigntk's API.
from bigntk.empirical._axes import axes_spec as axes_spec
from bigntk.empirical._batch import why_not_batch_independent as why_not_batch_independent
from bigntk.empirical._implementation import (
    DEFAULT_NTK_IMPLEMENTATION as DEFAULT_NTK_IMPLEMENTATION,
)
from bigntk.empirical._implementation import NtkImplementation as NtkImplementation
from bigntk.empirical._implementation import as_implementation as as_implementation
from bigntk.empirical._implementation import get_implementation as get_implementation
from bigntk.empirical._ntk_vp_fn import empirical_ntk_vp_fn as empirical_ntk_vp_fn
from bigntk.empirical._planning import KernelPlan as KernelPlan
from bigntk.empirical._planning import compile_by_rule as compile_by_rule
from bigntk.empirical._planning import compile_with_options as compile_with_options
from bigntk.empirical._planning import cpu_compiler_options as cpu_compiler_options
from bigntk.empirical._reference import reference_kernels as reference_kernels
from bigntk.empirical._trees import SplitParams as SplitParams

__all__ = [
    "DEFAULT_NTK_IMPLEMENTATION",
    "EmpiricalKernel",
    "KernelPlan",
    "NtkImplementation",
    "SplitParams",
    "as_implementation",
    "axes_spec",
    "compile_by_rule",
    "compile_with_options",
    "cpu_compiler_options",
    "empirical_kernel_fn",
    "empirical_nngp_fn",
    "empirical_ntk_fn",
    "empirical_ntk_vp_fn",
    "get_implementation",
    "reference_kernels",
    "why_not_batch_independent",
]
