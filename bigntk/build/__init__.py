"""Building kernels block by block on Ray workers into a Zarr store."""

from bigntk.build._driver import BuildResult as BuildResult
from bigntk.build._driver import build_kernel as build_kernel
from bigntk.build._store import KernelStore as KernelStore

__all__ = ["BuildResult", "KernelStore", "build_kernel"]
