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


@dataclasses.dataclass
class CGState:
    """The recurrence after ``iterations`` iterations: enough to continue it exactly.

    Attributes:
        x: the iterate ``(n, r)``.
        r: the residual ``b − A x`` ``(n, r)``.
        p: the search directions ``(n, r)``.
        rz: ``rᵀ P⁻¹ r`` per column ``(r,)``.
        active: columns not yet converged ``(r,)``.
        residual: relative residual per column ``(r,)``.
        iterations: iterations run.
        history: the largest relative residual after each iteration.
    """

    x: np.ndarray
    r: np.ndarray
    p: np.ndarray
    rz: np.ndarray
    active: np.ndarray
    residual: np.ndarray
    iterations: int = 0
    history: list[float] = dataclasses.field(default_factory=list)


def _columnwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->j", a, b)


def _norms(b: np.ndarray) -> np.ndarray:
    b_norm = np.linalg.norm(b, axis=0)
    b_norm[b_norm == 0] = 1.0  # a zero right-hand side is solved by x = 0
    return b_norm


def initial_state(b: np.ndarray, precondition, tol: float) -> CGState:
    """The state before the first iteration (``x = 0``)."""
    r = b.copy()
    residual = np.linalg.norm(r, axis=0) / _norms(b)
    z = precondition(r) if precondition else r.copy()
    return CGState(np.zeros_like(b), r, z.copy(), _columnwise(r, z), residual > tol, residual)


def _step(state: CGState, matmat, precondition, b_norm, tol: float, shift: float) -> None:
    """One CG iteration on ``state``, in place."""
    s, active = state, state.active
    q = matmat(s.p)
    if not np.all(np.isfinite(q)):
        raise NotPositiveDefiniteError(
            "The kernel holds NaN or infinite entries (a build opened with "
            "allow_incomplete=True?); finish the build before solving."
        )
    curvature = _columnwise(s.p, q)
    if np.any(curvature[active] <= 0):
        raise not_positive_definite(
            f"conjugate gradients met non-positive curvature at iteration {s.iterations}", shift
        )
    step = np.divide(s.rz, curvature, out=np.zeros_like(s.rz), where=active)
    s.x = s.x + step * s.p
    s.r = s.r - step * q
    s.residual = np.where(active, np.linalg.norm(s.r, axis=0) / b_norm, s.residual)
    s.active = active & (s.residual > tol)
    z = precondition(s.r) if precondition else s.r.copy()
    rz_new = _columnwise(s.r, z)
    if np.any(rz_new[s.active] <= 0):
        raise not_positive_definite(
            f"the preconditioner is not positive definite (iteration {s.iterations})", shift
        )
    beta = np.divide(rz_new, s.rz, out=np.zeros_like(s.rz), where=s.active)
    s.p, s.rz = z + beta * s.p, rz_new
    s.iterations += 1
    s.history.append(float(s.residual.max()))


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
    state: CGState | None = None,
    on_iteration: Callable[[CGState], None] | None = None,
) -> tuple[np.ndarray, CGResult]:
    """Solve ``A x = b`` for a symmetric positive definite ``A`` given by ``matmat``.

    Args:
        matmat: ``v (n, r) -> A v (n, r)``.
        b: right-hand sides ``(n, r)``.
        precondition: ``v -> P⁻¹ v`` (symmetric positive definite), or None.
        tol: stop a column once ``‖b − A x‖ ≤ tol ‖b‖``.
        maxiter: cap on the total iterations (a resumed state's included); reaching
            it warns :class:`ConvergenceWarning`.
        shift: the regulariser in ``A`` (only quoted in errors).
        progress: show a progress bar on a terminal.
        state: a :class:`CGState` saved by an earlier run on the same problem, to continue.
        on_iteration: called with the state after each iteration (checkpoints, callbacks).

    Returns:
        ``x (n, r)`` and a :class:`CGResult`.

    Raises:
        NotPositiveDefiniteError: ``pᵀ A p ≤ 0`` (``A`` is not positive definite)
            or ``rᵀ P⁻¹ r ≤ 0`` (nor is the preconditioner), or non-finite values.
    """
    from tqdm.auto import tqdm

    state = state or initial_state(b, precondition, tol)
    b_norm = _norms(b)
    show = progress and sys.stderr.isatty()
    bar = tqdm(total=maxiter, initial=state.iterations, desc=desc, unit="it",
               disable=not show, dynamic_ncols=True)  # fmt: skip
    try:
        while state.active.any() and state.iterations < maxiter:
            _step(state, matmat, precondition, b_norm, tol, shift)
            if on_iteration is not None:
                on_iteration(state)
            bar.update(1)
            bar.set_postfix_str(
                f"residual {state.history[-1]:.2e}, {int(state.active.sum())} rhs left"
            )
    finally:
        bar.close()
    converged = not state.active.any()
    if not converged:
        warnings.warn(
            f"conjugate gradients stopped after maxiter={maxiter} iterations with relative "
            f"residual {state.residual.max():.2e} > tol={tol:.1e}. Raise maxiter, use "
            "preconditioner='nystrom' with a larger rank, or a larger diag_reg.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return state.x, CGResult(state.iterations, converged, tuple(state.history))
