"""Kernel ridge regression / Gaussian-process posterior from train-train and test-train kernels.

``fit`` solves ``(K + λ I) α = y`` once; ``KernelRegression.predict`` gives
the posterior mean ``K_* α`` for any test-train kernel and, given the
test-test diagonal, the posterior variance
``k_** − K_* (K + λ I)⁻¹ K_*ᵀ`` (per test example; the latent function's, so
add ``λ`` for a noisy observation).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, NamedTuple

import numpy as np

from bigntk.errors import KernelShapeError
from bigntk.solve._cg import initial_state, pcg
from bigntk.solve._checkpoint import for_fit
from bigntk.solve._distributed import DistributedKernel, as_operator
from bigntk.solve._operator import (
    KernelOperator,
    apply_kernel,
    array_module,
    as_kernel,
    is_dask,
    output_size,
)
from bigntk.solve._precondition import make_preconditioner, not_positive_definite
from bigntk.store import open_kernel

_METHODS = ("auto", "cholesky", "cg")


@dataclasses.dataclass(frozen=True)
class SolveInfo:
    """How ``(K + λ I) α = y`` was solved.

    Attributes:
        method: ``'cholesky'`` or ``'cg'``.
        preconditioner: ``'nystrom'``, ``'jacobi'`` or None (always None for Cholesky).
        diag_reg: ``λ``, the absolute regulariser added to the diagonal.
        iterations: CG iterations (0 for Cholesky).
        converged: CG reached ``tol`` in every column (True for Cholesky).
        residual: ``max_j ‖(K + λ I) α_j − y_j‖ / ‖y_j‖``, recomputed at the end.
        passes: products with the whole kernel (each reads a stored kernel once),
            the residual check included.
        seconds: wall time of the fit.
        resumed_from: the checkpointed CG iteration the solve continued from (0: none).
        bytes_read: bytes a distributed kernel read from its store (None otherwise).
    """

    method: str
    preconditioner: str | None
    diag_reg: float
    iterations: int
    converged: bool
    residual: float
    passes: int
    seconds: float
    resumed_from: int = 0
    bytes_read: int | None = None


class Prediction(NamedTuple):
    """Posterior mean and (on request) variance at the test examples.

    Attributes:
        mean: shaped like the targets with ``m`` test examples in place of
            ``n``: ``(m,)``, ``(m, r)``, ``(m, k)`` or ``(m, k, r)``.
        variance: ``(m,)`` for a traced kernel, ``(m, k, k)`` (one covariance
            per test example) for a ``(·, ·, k, k)`` one; None unless
            ``k_test_test`` was given.
        info: how the training system was solved.
    """

    mean: np.ndarray
    variance: np.ndarray | None
    info: SolveInfo


class KernelRegression:
    """A solved training system; call :meth:`predict` with test kernels.

    Attributes:
        alpha: ``(K + λ I)⁻¹ y``, shaped like the targets ``y``.
        info: a :class:`SolveInfo`.
    """

    def __init__(self, op: KernelOperator, y_shape, alpha, info, solver, batch):
        self._op, self._y_shape, self._solver, self._batch = op, y_shape, solver, batch
        self._alpha_flat = alpha
        self.alpha = alpha.reshape(y_shape)
        self.info = info

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """``(K + λ I)⁻¹ rhs`` for ``rhs`` of shape ``(n*k, r)`` (flattened example-major)."""
        return self._solver(np.asarray(rhs, dtype=np.float64))

    def close(self) -> None:
        """Stop a distributed kernel's actors (no-op otherwise); ``predict`` then fails."""
        if isinstance(self._op, DistributedKernel):
            self._op.close()

    def predict(self, k_test_train: Any, k_test_test: Any = None) -> Prediction:
        """The posterior at ``m`` test examples.

        Args:
            k_test_train: ``(m, n)`` or ``(m, n, k, k)``, the same kind (``ntk``,
                ``nngp``) and output layout as the train-train kernel; NumPy or
                Dask (contracted chunk by chunk).
            k_test_test: for the variance: the test-test diagonal ``(m,)`` /
                ``(m, k, k)`` (a ``diagonal_axes=(0,)`` build) or the full
                ``(m, m)`` / ``(m, m, k, k)`` kernel (only its diagonal is read).

        Returns:
            A :class:`Prediction`. The variance needs solves with ``m * k``
            right-hand sides in all, ``block_size`` test examples (default: the
            Dask chunk rows, else 512) at a time.
        """
        op = self._op
        if isinstance(k_test_train, str | os.PathLike):  # a store of K(x_test, x_train)
            k_test_train = open_kernel(str(k_test_train), getattr(op, "kind", "ntk"))
        if isinstance(k_test_test, str | os.PathLike):
            k_test_test = open_kernel(str(k_test_test), getattr(op, "kind", "ntk"))
        k_test_train = as_kernel(k_test_train, "k_test_train")
        m = _check_test_train(k_test_train.shape, op)
        mean = apply_kernel(k_test_train, self._alpha_flat, op.k)  # (m*k, r)
        mean = mean.reshape((m, *self._y_shape[1:]))
        variance = None
        if k_test_test is not None:
            prior = _test_diagonal(as_kernel(k_test_test, "k_test_test"), m, op.k)
            variance = np.empty_like(prior)
            for a in range(0, m, self._batch):
                b = min(a + self._batch, m)
                q = np.asarray(k_test_train[a:b], dtype=np.float64)
                q = _flat_rows(q, op.k)  # ((b-a)*k, n*k)
                w = self.solve(q.T)  # (n*k, (b-a)*k)
                explained = np.einsum("mai,mbi->mab", q.reshape(b - a, op.k, -1),
                                      w.T.reshape(b - a, op.k, -1))  # fmt: skip
                variance[a:b] = prior[a:b] - (explained[:, 0, 0] if op.k == 1 else explained)
        return Prediction(mean, variance, self.info)


def _flat_rows(kernel: np.ndarray, k: int) -> np.ndarray:
    if kernel.ndim == 2:
        return kernel
    return np.transpose(kernel, (0, 2, 1, 3)).reshape(kernel.shape[0] * k, -1)


def _check_test_train(shape: tuple[int, ...], op: KernelOperator) -> int:
    want = "(m, n)" if op.k == 1 else f"(m, n, {op.k}, {op.k})"
    k = output_size(shape, "k_test_train")
    if k != op.k or shape[1] != op.n or len(shape) != op.ndim:
        raise KernelShapeError(
            f"k_test_train must have shape {want} with n = {op.n} training examples, like the "
            f"train-train kernel {op.shape}; got {shape}. Pass K(x_test, x_train) "
            "built with the same trace_axes."
        )
    return shape[0]


def _test_diagonal(kernel, m: int, k: int) -> np.ndarray:
    """The prior variances ``(m,)`` / ``(m, k, k)`` from a diagonal or full test-test kernel."""
    shape = kernel.shape
    diag_shape = (m,) if k == 1 else (m, k, k)
    full_shape = (m, m) if k == 1 else (m, m, k, k)
    if shape == full_shape:
        lib = array_module(kernel)
        kernel = lib.moveaxis(lib.diagonal(kernel, axis1=0, axis2=1), -1, 0)
    elif shape != diag_shape:
        raise KernelShapeError(
            f"k_test_test must be the test diagonal {diag_shape} or the full test-test kernel "
            f"{full_shape} for m = {m} test examples, got {shape}."
        )
    if is_dask(kernel):
        kernel = kernel.compute()
    return np.asarray(kernel, dtype=np.float64)


def _targets(y: Any, op: KernelOperator) -> tuple[np.ndarray, tuple[int, ...]]:
    """``y`` as ``(n*k, r)`` float64, and its original shape."""
    y = np.asarray(y.compute() if is_dask(y) else y, dtype=np.float64)
    if op.k == 1:
        ok, want = y.ndim in (1, 2) and y.shape[0] == op.n, f"({op.n},) or ({op.n}, r)"
    else:
        ok = y.ndim in (2, 3) and y.shape[:2] == (op.n, op.k)
        want = f"({op.n}, {op.k}) or ({op.n}, {op.k}, r)"
    if not ok:
        raise KernelShapeError(
            f"y_train must have shape {want} for a train-train kernel of shape "
            f"{op.shape}, got {y.shape}."
        )
    if not np.all(np.isfinite(y)):
        raise ValueError("y_train holds NaN or infinite values.")
    return y.reshape(op.size, -1), y.shape


def fit(
    k_train_train: Any,
    y_train: Any,
    *,
    diag_reg: float = 1e-4,
    diag_reg_absolute_scale: bool = False,
    method: str = "auto",
    preconditioner: str | None = "nystrom",
    rank: int = 256,
    block_size: int | None = None,
    tol: float = 1e-6,
    maxiter: int = 1000,
    progress: bool = True,
    seed: int = 0,
    kind: str = "ntk",
    distributed: bool = False,
    address: str | None = None,
    workers: int | None = None,
    checkpoint: str | os.PathLike | bool | None = None,
    checkpoint_every: int = 5,
    callback: Any = None,
) -> KernelRegression:
    """Solve ``(K + λ I) α = y`` for kernel ridge regression / a GP posterior.

    Works with any kernel bigntk builds (``ntk`` or ``nngp``): traced outputs
    ``(n, n)``, or ``trace_axes=()`` kernels ``(n, n, k, k)`` treated as the
    ``(n*k, n*k)`` matrix of per-output blocks.

    Args:
        k_train_train: the symmetric train-train kernel, NumPy/JAX ``(n, n)`` /
            ``(n, n, k, k)``, a Dask array as returned by :func:`bigntk.open_kernel`
            (never materialised by ``method='cg'``), the path of a kernel store
            (opened as that Dask array, or held by Ray actors with
            ``distributed=True``), or a :class:`DistributedKernel`.
        y_train: targets ``(n,)`` or ``(n, r)`` (``r`` right-hand sides) for a
            traced kernel; ``(n, k)`` or ``(n, k, r)`` for a per-output one.
        diag_reg: the regulariser ``λ`` (ridge; the GP's noise variance). As in
            Neural Tangents it is relative to the mean of the kernel's diagonal
            unless ``diag_reg_absolute_scale``.
        method: ``'cholesky'`` (in memory, SciPy), ``'cg'`` (preconditioned
            conjugate gradients; products chunk by chunk), or ``'auto'``:
            Cholesky for in-memory kernels, CG for Dask ones.
        preconditioner: for CG: ``'nystrom'`` (rank-``rank`` Nyström, good for
            the fast-decaying spectra of network kernels), ``'jacobi'``
            (block-Jacobi over ``block_size`` examples, default the Dask
            chunks) or None.
        rank: Nyström landmark examples.
        block_size: block-Jacobi block, and test examples per variance solve.
        tol: CG stops when every ``‖y − (K + λ I) α‖ ≤ tol ‖y‖``.
        maxiter: CG iteration cap (reaching it warns ``ConvergenceWarning``).
        progress: a progress bar for CG on a terminal.
        seed: seed of the Nyström landmarks.
        kind: the kernel read from a store path (``'ntk'`` or ``'nngp'``).
        distributed: hold a store path's kernel in Ray actors' memory
            (:class:`DistributedKernel`: the store is read once, products come from
            memory); ``address`` implies it.
        address: the Ray cluster for ``distributed`` (None: the running Ray, else
            a new local one).
        workers: actors for ``distributed`` (default: the cluster's CPUs).
        checkpoint: where CG saves its iterate every ``checkpoint_every``
            iterations and at the end, and finds it again: a folder; None (default):
            ``<store>/solve/`` for a local store, none for arrays; False: never. A
            fit of the same problem (kernel, targets, regulariser, preconditioner,
            tolerance) continues from the saved iteration.
        checkpoint_every: iterations between checkpoints.
        callback: called as ``callback(state)`` with the :class:`CGState` after
            each CG iteration.

    Returns:
        A :class:`KernelRegression`: ``.alpha``, ``.info``, ``.predict(...)``
        (``.close()`` stops a distributed kernel's actors).

    Raises:
        KernelShapeError: shapes that do not fit together.
        NotPositiveDefiniteError: ``K + λ I`` is not positive definite enough
            (Cholesky failure or CG breakdown); use a larger ``diag_reg``.
    """
    start = time.perf_counter()
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r} instead.")
    op = as_operator(k_train_train, kind=kind, distributed=distributed, address=address,
                     workers=workers)  # fmt: skip
    y, y_shape = _targets(y_train, op)
    if not (np.isfinite(diag_reg) and diag_reg >= 0):
        raise ValueError(f"diag_reg must be a finite number >= 0, got {diag_reg!r} instead.")
    if method == "auto":
        method = "cg" if op.is_dask or isinstance(op, DistributedKernel) else "cholesky"
    scale = 1.0 if diag_reg_absolute_scale else float(np.mean(op.diagonal(block_size)))
    op.shift = float(diag_reg) * scale
    default_batch = op.plan.block if isinstance(op, DistributedKernel) else (
        op.kernel.chunks[0][0] if op.is_dask else 512)  # fmt: skip
    batch = int(block_size or default_batch)
    resumed_from = 0
    if method == "cholesky":
        solver = _cholesky_solver(op)
        alpha = solver(y)
        name, iterations, converged = None, 0, True
    else:
        precond = make_preconditioner(preconditioner, op, rank=rank, block_size=block_size,
                                      seed=seed)  # fmt: skip

        def solver(rhs: np.ndarray, desc: str = "bigntk solve (variance)") -> np.ndarray:
            return pcg(op.matmat, rhs, precond, tol=tol, maxiter=maxiter, shift=op.shift,
                       progress=progress, desc=desc)[0]  # fmt: skip

        saver = for_fit(checkpoint, k_train_train, op, kind, y, checkpoint_every,
                        shift=op.shift, preconditioner=preconditioner, rank=rank,
                        block_size=block_size, seed=seed, tol=tol)  # fmt: skip
        state = (saver and saver.load(y.shape)) or initial_state(y, precond, tol)
        resumed_from = state.iterations
        hooks = [hook for hook in (saver, callback) if hook is not None]
        alpha, result = pcg(op.matmat, y, precond, tol=tol, maxiter=maxiter, shift=op.shift,
                            progress=progress, state=state,
                            on_iteration=lambda s: [hook(s) for hook in hooks])  # fmt: skip
        if saver is not None:
            saver.save(state)
        name = None if precond is None else precond.name
        iterations, converged = result.iterations, result.converged
    residual = op.matmat(alpha) - y
    y_norm = np.linalg.norm(y, axis=0)
    relative = np.linalg.norm(residual, axis=0) / np.where(y_norm > 0, y_norm, 1.0)
    info = SolveInfo(
        method=method,
        preconditioner=name,
        diag_reg=op.shift,
        iterations=iterations,
        converged=converged,
        residual=float(relative.max()),
        passes=op.passes,
        seconds=time.perf_counter() - start,
        resumed_from=resumed_from,
        bytes_read=getattr(op, "bytes_read", None),
    )
    return KernelRegression(op, y_shape, alpha, info, solver, batch)


def _cholesky_solver(op: KernelOperator):
    """``rhs -> (K + shift I)⁻¹ rhs`` by one Cholesky factorisation of the whole matrix."""
    import scipy.linalg  # imported on use: it is slow to import

    if isinstance(op, DistributedKernel):
        matrix = op.submatrix(slice(None), slice(None))
    else:
        kernel = op.kernel.compute() if op.is_dask else op.kernel
        matrix = _flat_rows(np.array(kernel, dtype=np.float64), op.k)
    matrix[np.diag_indices_from(matrix)] += op.shift
    if not np.all(np.isfinite(matrix)):
        raise not_positive_definite("Cholesky: the kernel holds NaN or infinite entries", op.shift)
    try:
        factor = scipy.linalg.cho_factor(matrix, lower=True, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError as e:
        raise not_positive_definite("Cholesky factorisation failed", op.shift) from e
    return lambda rhs: scipy.linalg.cho_solve(factor, rhs, check_finite=False)


def kernel_regression(
    k_train_train: Any,
    y_train: Any,
    k_test_train: Any,
    k_test_test: Any = None,
    **fit_kwargs: Any,
) -> Prediction:
    """Kernel ridge regression / GP posterior in one call: ``fit(...).predict(...)``.

    Args:
        k_train_train: ``(n, n)`` or ``(n, n, k, k)``, NumPy or Dask.
        y_train: ``(n,)``, ``(n, r)``, ``(n, k)`` or ``(n, k, r)`` (see :func:`fit`).
        k_test_train: ``(m, n)`` or ``(m, n, k, k)``.
        k_test_test: None, or the test diagonal / test-test kernel for the variance.
        **fit_kwargs: ``diag_reg``, ``method``, ``preconditioner``, ... of :func:`fit`.

    Returns:
        A :class:`Prediction` ``(mean, variance, info)``.

    Example:
        >>> import numpy as np, bigntk as nt
        >>> x = np.linspace(0, 1, 5)[:, None]
        >>> k = np.exp(-((x - x.T) ** 2))
        >>> pred = nt.kernel_regression(k, x[:, 0], k[:2], diag_reg=1e-9)
        >>> np.round(pred.mean, 6).tolist()
        [0.0, 0.25]
    """
    return fit(k_train_train, y_train, **fit_kwargs).predict(k_test_train, k_test_test)
