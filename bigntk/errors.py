"""Every exception bigntk raises on purpose.

Each class also derives from the builtin exception a caller would naturally
catch (``ValueError``, ``NotImplementedError``, ...), so ``except ValueError``
keeps working.
"""

from __future__ import annotations

__all__ = [
    "BigNTKError",
    "AxisSizeMismatchError",
    "UnsupportedImplementationError",
    "MemoryBudgetError",
    "UnsupportedLayerError",
    "LayerArgumentError",
    "StoreError",
    "NotAStoreError",
    "SpecMismatchError",
    "IncompleteKernelError",
    "BuildInputError",
    "BlockFailedError",
    "ConfigError",
    "JobSubmitError",
    "StoreLockedError",
    "LeaseLostError",
    "StoreFullError",
    "WorkerStartError",
    "KernelShapeError",
    "NotPositiveDefiniteError",
    "ConvergenceWarning",
]


class BigNTKError(Exception):
    """Base class of every bigntk error."""


class AxisSizeMismatchError(BigNTKError, ValueError):
    """A traced or diagonal output axis has different sizes for x1 and x2."""


class UnsupportedImplementationError(BigNTKError, NotImplementedError):
    """The requested NTK implementation is not available (yet)."""


class MemoryBudgetError(BigNTKError, MemoryError):
    """A kernel cannot be computed within ``memory_budget``, even in the smallest chunks.

    The message names the minimum number of bytes needed.
    """


class UnsupportedLayerError(BigNTKError, NotImplementedError):
    """A ``bigntk.stax`` layer or argument has no implementation for this use.

    For example, a closed-form ``kernel_fn`` requested for a layer without one
    (``Conv``, ``LayerNorm``, ``Gelu``, ...; see the README's table of Neural
    Tangents stax names), or a Neural Tangents argument bigntk does not support.
    """


class LayerArgumentError(BigNTKError, ValueError):
    """A ``bigntk.stax`` layer was built or called with an invalid argument."""


class StoreError(BigNTKError):
    """Base class of kernel-store errors."""


class NotAStoreError(StoreError, FileExistsError):
    """The path exists and is not a bigntk kernel store."""


class SpecMismatchError(StoreError, ValueError):
    """The store at this path was built with a different spec."""


class IncompleteKernelError(StoreError, RuntimeError):
    """The kernel store is missing blocks."""


class BuildInputError(BigNTKError, ValueError):
    """An argument of a kernel build is invalid; nothing was computed."""


class BlockFailedError(BigNTKError, RuntimeError):
    """A block kept failing after its retries; committed blocks are kept."""


class StoreLockedError(StoreError, RuntimeError):
    """Another driver holds the store's writer lease; the message names it (host, pid, start)."""


class LeaseLostError(StoreError, RuntimeError):
    """This driver's writer lease was taken over (it expired); the build stopped writing."""


class StoreFullError(StoreError, OSError):
    """The store's disk (or quota) is full; committed blocks are kept, resume once freed."""


class WorkerStartError(BigNTKError, RuntimeError):
    """Worker actors kept dying while starting; nothing was lost, the build can resume."""


class ConfigError(BigNTKError, ValueError):
    """A build config (a YAML file or a ``--set`` override) is invalid; nothing was computed.

    The message names the field (``kernel.trace_axes``), the value given and
    what is expected.
    """


class KernelShapeError(BigNTKError, ValueError):
    """Kernels or targets given to ``bigntk.solve`` have shapes that do not fit together.

    The message names the argument, the shape given and the shape expected.
    """


class NotPositiveDefiniteError(BigNTKError, ValueError):
    """The regularised kernel is not positive definite enough to solve with.

    Raised when a Cholesky factorisation fails or conjugate gradients meet
    non-positive curvature; the message suggests a larger ``diag_reg``.
    """


class ConvergenceWarning(RuntimeWarning):
    """An iterative solver stopped at ``maxiter`` before reaching its tolerance."""


class JobSubmitError(BigNTKError, RuntimeError):
    """``bigntk submit`` refused or lost a Ray job (e.g. one is already building the store)."""
