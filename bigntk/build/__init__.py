"""Building kernels block by block on Ray workers into a Zarr store."""

from bigntk.build._config import BuildConfig as BuildConfig
from bigntk.build._config import load_config as load_config
from bigntk.build._datasets import load_builtin as load_builtin
from bigntk.build._driver import build_kernel as build_kernel
from bigntk.build._scheduler import BuildResult as BuildResult
from bigntk.build._store import KernelStore as KernelStore

__all__ = [
    "BuildConfig",
    "BuildResult",
    "KernelStore",
    "build_kernel",
    "load_builtin",
    "load_config",
]
