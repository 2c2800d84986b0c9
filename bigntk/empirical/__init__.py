"""Empirical (finite-width) NNGP and NTK kernels of any JAX function.

Names, signatures and output conventions follow Neural Tangents'
``nt.empirical_*`` functions, so ``import bigntk as nt`` can replace
``import neural_tangents as nt`` for them.
"""

from bigntk.empirical._api import EmpiricalKernel as EmpiricalKernel
from bigntk.empirical._api import empirical_kernel_fn as empirical_kernel_fn
from bigntk.empirical._api import empirical_nngp_fn as empirical_nngp_fn
from bigntk.empirical._api import empirical_ntk_fn as empirical_ntk_fn
from bigntk.empirical._compiler_options import cpu_compiler_options as cpu_compiler_options
from bigntk.empirical._implementation import (
    DEFAULT_NTK_IMPLEMENTATION as DEFAULT_NTK_IMPLEMENTATION,
)
from bigntk.empirical._implementation import NtkImplementation as NtkImplementation
from bigntk.empirical._ntk_vp import empirical_ntk_vp_fn as empirical_ntk_vp_fn
from bigntk.empirical._reference import reference_kernels as reference_kernels

__all__ = [
    "DEFAULT_NTK_IMPLEMENTATION",
    "EmpiricalKernel",
    "NtkImplementation",
    "cpu_compiler_options",
    "empirical_kernel_fn",
    "empirical_nngp_fn",
    "empirical_ntk_fn",
    "empirical_ntk_vp_fn",
    "reference_kernels",
]
