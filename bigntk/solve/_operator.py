"""A kernel matrix as a linear operator, in memory (NumPy) or out of core (Dask).

A kernel ``(n1, n2)`` (outputs traced) is the matrix itself. A kernel
``(n1, n2, k, k)`` (``trace_axes=()``: one ``(k, k)`` block per pair of
examples) is the ``(n1 * k, n2 * k)`` matrix whose row ``i * k + a`` and column
``j * k + b`` hold ``K[i, j, a, b]``. Everything here works in that flattened
index space, in float64.

A Dask kernel is never materialised: products are Dask contractions over its
chunks (one pass over the stored kernel per product), and the pieces a
preconditioner needs (diagonal blocks, a few columns) are read on their own.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from bigntk.errors import KernelShapeError

if TYPE_CHECKING:
    import dask.array as da

#: Rows per block-Jacobi block for in-memory kernels (Dask kernels use their chunks).
DEFAULT_BLOCK = 512


def is_dask(value: Any) -> bool:
    """Whether ``value`` is a Dask array. Dask is not imported here: where it was never
    imported there is none (the solver's actors, on NumPy blocks, start without it)."""
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(value, module.Array)


def array_module(value: Any) -> Any:
    """``dask.array`` for a Dask array, else NumPy."""
    return sys.modules["dask.array"] if is_dask(value) else np


def as_kernel(value: Any, name: str) -> np.ndarray | da.Array:
    """``value`` as a NumPy or Dask array of floats; anything array-like is converted."""
    if is_dask(value):
        array = value
    else:
        try:
            array = np.asarray(value)
        except Exception as e:  # a pytree, a string...
            raise KernelShapeError(
                f"{name} must be a NumPy, JAX or Dask array, got {type(value).__name__}."
            ) from e
    if not np.issubdtype(array.dtype, np.floating):
        raise KernelShapeError(f"{name} must hold floats, got dtype {array.dtype}.")
    return array


def output_size(kernel_shape: tuple[int, ...], name: str) -> int:
    """``k``: 1 for a traced ``(n1, n2)`` kernel, ``k`` for an ``(n1, n2, k, k)`` one."""
    if len(kernel_shape) == 2:
        return 1
    if len(kernel_shape) == 4 and kernel_shape[2] == kernel_shape[3]:
        return kernel_shape[2]
    raise KernelShapeError(
        f"{name} must have shape (n1, n2) (outputs traced) or (n1, n2, k, k) (trace_axes=()), "
        f"got {kernel_shape}. Build the kernel with trace_axes covering every output axis but "
        "one, or with trace_axes=() on a (batch, k) output."
    )


def flatten_block(block: np.ndarray, k: int) -> np.ndarray:
    """A NumPy block ``(r, c)`` or ``(r, c, k, k)`` as the ``(r * k, c * k)`` matrix."""
    if block.ndim == 2:
        return block
    return np.ascontiguousarray(np.transpose(block, (0, 2, 1, 3))).reshape(
        block.shape[0] * k, block.shape[1] * k
    )


def _flatten_columns(kernel, n_rows: int, k: int):
    """A ``(n_rows, n, k, k)`` kernel as the ``(n_rows * k, n * k)`` matrix (same library)."""
    if k == 1 and kernel.ndim == 2:
        return kernel
    lib = array_module(kernel)
    return lib.transpose(kernel, (0, 2, 1, 3)).reshape(n_rows * k, -1)


class KernelOperator:
    """A square train-train kernel ``(n, n)`` or ``(n, n, k, k)`` as an ``(n*k, n*k)`` operator.

    Attributes:
        n: examples.
        k: outputs per example (1 when traced).
        size: ``n * k``.
        shift: added to the diagonal (the absolute regulariser).
        passes: full products computed so far (each reads the whole kernel once).
    """

    def __init__(self, kernel: Any, shift: float = 0.0, name: str = "k_train_train"):
        kernel = as_kernel(kernel, name)
        self.k = output_size(kernel.shape, name)
        if kernel.shape[0] != kernel.shape[1]:
            raise KernelShapeError(
                f"{name} must be square (train x train), got shape {kernel.shape}; pass the "
                "train-train kernel first and the test-train kernel to predict()."
            )
        self.kernel = kernel
        self.n = kernel.shape[0]
        self.size = self.n * self.k
        self.shift = float(shift)
        self.passes = 0
        self.is_dask = is_dask(kernel)
        self.shape, self.ndim = tuple(kernel.shape), kernel.ndim

    def block_bounds(self, block_size: int | None = None) -> list[tuple[int, int]]:
        """Example ranges ``[(start, stop), ...]`` covering ``range(n)``: the Dask row chunks
        by default (a diagonal block is then one stored chunk), else ``block_size`` rows."""
        if block_size is None and self.is_dask:
            edges = np.cumsum((0, *self.kernel.chunks[0]))
        else:
            step = int(block_size or DEFAULT_BLOCK)
            edges = np.unique(np.r_[np.arange(0, self.n, step), self.n])
        return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]

    def submatrix(self, rows: np.ndarray | slice, cols: np.ndarray | slice) -> np.ndarray:
        """``K[rows, cols]`` over *examples*, flattened to ``(len(rows) * k, len(cols) * k)``,
        float64, without the shift."""
        part = self.kernel[rows][:, cols]
        if self.is_dask:
            part = part.compute()
        part = np.asarray(part, dtype=np.float64)
        return _flatten_columns(part, part.shape[0], self.k)

    def diagonal(self, block_size: int | None = None) -> np.ndarray:
        """The ``(n*k,)`` diagonal (without the shift), reading only diagonal blocks."""
        parts = [np.diag(self.submatrix(slice(a, b), slice(a, b))) for a, b in
                 self.block_bounds(block_size)]  # fmt: skip
        return np.concatenate(parts)

    def diagonal_blocks(self, block_size: int | None = None):
        """``[((start, stop), block), ...]``: the flattened diagonal blocks, without the shift."""
        return [((a, b), self.submatrix(slice(a, b), slice(a, b)))
                for a, b in self.block_bounds(block_size)]  # fmt: skip

    def matmat(self, v: np.ndarray) -> np.ndarray:
        """``(K + shift I) @ v`` for ``v`` of shape ``(n*k, r)``; one pass over the kernel."""
        self.passes += 1
        return apply_kernel(self.kernel, v, self.k) + self.shift * v


def apply_kernel(kernel: np.ndarray | da.Array, v: np.ndarray, k: int) -> np.ndarray:
    """``K @ v`` for a kernel ``(m, n)`` or ``(m, n, k, k)`` and ``v`` ``(n*k, r)``:
    ``(m*k, r)`` float64. A Dask kernel is contracted chunk by chunk, never materialised."""
    m, n = kernel.shape[:2]
    r = v.shape[1]
    if is_dask(kernel):
        import dask.array as da

        kernel = kernel.astype(np.float64)
        if k == 1 and kernel.ndim == 2:
            rhs = da.from_array(v, chunks=(kernel.chunks[1], r))
            out = da.matmul(kernel, rhs)
        else:
            rhs = da.from_array(v.reshape(n, k, r), chunks=(kernel.chunks[1], k, r))
            out = da.tensordot(kernel, rhs, axes=((1, 3), (0, 1)))
        return np.asarray(out.compute(), dtype=np.float64).reshape(m * k, r)
    kernel = np.asarray(kernel, dtype=np.float64)
    if k == 1 and kernel.ndim == 2:
        return kernel @ v
    return np.tensordot(kernel, v.reshape(n, k, r), axes=((1, 3), (0, 1))).reshape(m * k, r)
