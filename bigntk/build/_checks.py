"""Checks of ``build_kernel``'s arguments that need no Ray and no model call.

Each failure is a :class:`~bigntk.errors.BuildInputError` saying what was
expected, what was given and how to fix it, raised before anything is
computed or written.
"""

from __future__ import annotations

import numbers
import os
from typing import Any

from bigntk.errors import BuildInputError


def check_arguments(
    path: Any, kinds: Any, implementation: Any, lease_wait: Any, max_worker_deaths: Any = 3
) -> None:
    """Types and ranges of the plain arguments of ``build_kernel``."""
    if not (isinstance(path, str) or hasattr(path, "__fspath__")) or not str(os.fspath(path)):
        raise BuildInputError(
            f"path must be the store's path or URL (a non-empty str or os.PathLike), got "
            f"{path!r} instead; e.g. path='kernels/k.zarr'."
        )
    if not isinstance(kinds, str) and not (
        isinstance(kinds, list | tuple) and all(isinstance(k, str) for k in kinds)
    ):
        raise BuildInputError(
            f"kinds must be 'ntk', 'nngp' or a tuple of them, got {kinds!r} instead; e.g. "
            "kinds=('nngp', 'ntk')."
        )
    from bigntk.empirical import get_implementation

    try:
        get_implementation(implementation)
    except (TypeError, ValueError) as e:
        raise BuildInputError(str(e)) from None
    if lease_wait is not None and (
        not isinstance(lease_wait, numbers.Real) or isinstance(lease_wait, bool) or lease_wait < 0
    ):
        raise BuildInputError(
            f"lease_wait must be None (wait as long as it takes) or seconds >= 0, got "
            f"{lease_wait!r} instead."
        )
    if (
        not isinstance(max_worker_deaths, int)
        or isinstance(max_worker_deaths, bool)
        or (max_worker_deaths < 1)
    ):
        raise BuildInputError(
            f"max_worker_deaths must be a positive int, got {max_worker_deaths!r} instead; e.g. "
            "max_worker_deaths=3."
        )


def check_source_dtypes(x1: Any, x2: Any) -> None:
    """Real numbers, and one dtype for x1 and x2: one compiled program serves every block."""
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and x.dtype.kind not in "biuf":
            raise BuildInputError(
                f"{name} must hold real numbers (bool, int or float), got dtype {x.dtype} "
                f"({getattr(x, 'description', name)}); convert it, e.g. {name}.astype('float32')."
            )
    if x2 is not None and x1.dtype != x2.dtype:
        raise BuildInputError(
            f"x1 and x2 must have the same dtype, got {x1.dtype} and {x2.dtype}; cast one, "
            f"e.g. x2.astype({str(x1.dtype)!r})."
        )
