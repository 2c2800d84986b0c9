"""Preconditioned conjugate gradients for many right-hand sides at once.

Each column of ``b`` runs its own CG recurrence, but all columns share one
product with the operator per iteration: for an out-of-core kernel that
product is a pass over the stored kernel, the expensive part, so ``r``
right-hand sides cost about as much as one. Converged columns are frozen.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from collections.abc import Callable

import numpy as np

from bigntk.errors import ConvergenceWarning, NotPositiveDefiniteError
from bigntk.solve._precondition import not_positive_definite


@dataclasses.dataclass(frozen=True)
class CGResult:
    """What a CG run did.

    Attributes:
        iterations: iterations run (products with the operator, the initial one excluded).
        converged: every column reached ``tol``.
        residuals: the largest recursive relative residual after each iteration.
    """

    iterations: int
    converged: bool
    residuals: tuple[float, ...]


def _columnwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->j", a, b)


def pcg(
    matmat: Callable[[np.ndarray], np.ndarray],
    b: np.ndarray,
    precondition: Callable[[np.ndarray], np.ndarray] | None,
    *,
    tol: float,
    maxiter: int,
    shift: float,
    progress: bool,
    desc: str = "bigntk solve",
) -> tuple[np.ndarray, CGResult]:
    """Solve ``A x = b`` for a symmetric positive definite ``A`` given by ``matmat``.

    Args:
        matmat: ``v (n, r) -> A v (n, r)``.
        b: right-hand sides ``(n, r)``.
        precondition: ``v -> P⁻¹ v`` (symmetric positive definite), or None.
        tol: stop a column once ``‖b − A x‖ ≤ tol ‖b‖``.
        maxiter: iteration cap; reaching it warns :class:`ConvergenceWarning`.
        shift: the regulariser in ``A`` (only quoted in errors).
        progress: show a progress bar on a terminal.

    Returns:
        ``x (n, r)`` and a :class:`CGResult`.

    Raises:
        NotPositiveDefiniteError: ``pᵀ A p ≤ 0`` (``A`` is not positive definite)
            or ``rᵀ P⁻¹ r ≤ 0`` (nor is the preconditioner), or non-finite values.
    """
    from tqdm.auto import tqdm

    precondition = precondition or (lambda v: v.copy())
    x = np.zeros_like(b)
    r = b.copy()
    b_norm = np.linalg.norm(b, axis=0)
    b_norm[b_norm == 0] = 1.0  # a zero right-hand side is solved by x = 0
    residual = np.linalg.norm(r, axis=0) / b_norm
    active = residual > tol
    z = precondition(r)
    p = z.copy()
    rz = _columnwise(r, z)
    history: list[float] = []
    show = progress and sys.stderr.isatty()
    bar = tqdm(total=maxiter, desc=desc, unit="it", disable=not show, dynamic_ncols=True)
    iterations = 0
    try:
        while active.any() and iterations < maxiter:
            q = matmat(p)
            if not np.all(np.isfinite(q)):
                raise NotPositiveDefiniteError(
                    "The kernel holds NaN or infinite entries (a build opened with "
                    "allow_incomplete=True?); finish the build before solving."
                )
            curvature = _columnwise(p, q)
            if np.any(curvature[active] <= 0):
                raise not_positive_definite(
                    f"conjugate gradients met non-positive curvature at iteration {iterations}",
                    shift,
                )
            step = np.divide(rz, curvature, out=np.zeros_like(rz), where=active)
            x += step * p
            r -= step * q
            residual = np.where(active, np.linalg.norm(r, axis=0) / b_norm, residual)
            active &= residual > tol
            z = precondition(r)
            rz_new = _columnwise(r, z)
            if np.any(rz_new[active] <= 0):
                raise not_positive_definite(
                    f"the preconditioner is not positive definite (iteration {iterations})", shift
                )
            beta = np.divide(rz_new, rz, out=np.zeros_like(rz), where=active)
            p = z + beta * p
            rz = rz_new
            iterations += 1
            history.append(float(residual.max()))
            bar.update(1)
            bar.set_postfix_str(f"residual {history[-1]:.2e}, {int(active.sum())} rhs left")
    finally:
        bar.close()
    converged = not active.any()
    if not converged:
        warnings.warn(
            f"conjugate gradients stopped after maxiter={maxiter} iterations with relative "
            f"residual {residual.max():.2e} > tol={tol:.1e}. Raise maxiter, use "
            "preconditioner='nystrom' with a larger rank, or a larger diag_reg.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return x, CGResult(iterations, converged, tuple(history))
