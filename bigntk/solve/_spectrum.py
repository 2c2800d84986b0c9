"""The top eigenpairs of a kernel by block Lanczos (block Krylov with full reorthogonalisation).

Starting from ``b`` random columns ``Q_0``, each iteration multiplies the newest
block by the kernel once (one pass over a Dask kernel, one call to the actors of
a distributed one) and orthonormalises the product against every earlier block
(twice, for stability) to get the next block. The Rayleigh-Ritz projection
``T = Qᵀ K Q`` uses the products already made, so ``q`` iterations cost ``q``
products with ``b`` right-hand sides and nothing else. It stops when every
wanted Ritz pair has ``‖K u − θ u‖ ≤ tol · θ_max``, which bounds the error of
each eigenvalue by the same amount (Weyl); eigenvectors are good to
``tol · θ_max / gap``. Block Krylov methods converge much faster than
subspace iteration on the fast-decaying spectra of network kernels
(Musco & Musco 2015, "Randomized block Krylov methods for stronger and
faster approximate singular value decomposition").

Memory on the driver: ``2 q b`` vectors of ``n * k`` float64.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple

import numpy as np

from bigntk.solve._distributed import DistributedKernel, as_operator

logger = logging.getLogger(__name__)


class Spectrum(NamedTuple):
    """The top ``k`` eigenpairs of the ``(n*k_out, n*k_out)`` kernel matrix.

    Attributes:
        eigenvalues: ``(k,)``, largest first.
        eigenvectors: ``(n * k_out, k)`` orthonormal columns (row ``i * k_out + a``:
            example ``i``, output ``a``; for a traced kernel ``(n, k)``).
        residuals: ``(k,)``: ``‖K u − θ u‖`` of each pair.
        iterations: products with the kernel (each with ``block`` columns).
        seconds: wall time.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    residuals: np.ndarray
    iterations: int
    seconds: float


def eigh_topk(
    kernel: Any,
    k: int,
    *,
    block: int | None = None,
    tol: float = 1e-8,
    maxiter: int = 100,
    seed: int = 0,
    kind: str = "ntk",
    distributed: bool = False,
    address: str | None = None,
    workers: int | None = None,
) -> Spectrum:
    """The ``k`` largest eigenvalues and their eigenvectors of a symmetric kernel.

    Args:
        kernel: ``(n, n)`` or ``(n, n, k_out, k_out)`` as NumPy, Dask (never
            materialised), a kernel store path (``distributed=True``: held by Ray
            actors, the store read once) or a :class:`DistributedKernel`.
        k: eigenpairs wanted, ``1 <= k < n * k_out``.
        block: columns per Krylov block (default ``max(2 k, k + 8)``); larger blocks
            need fewer passes over the kernel.
        tol: stop once every pair has ``‖K u − θ u‖ ≤ tol · θ_max``.
        maxiter: products with the kernel at most.
        seed: seed of the random start.
        kind, distributed, address, workers: as in :func:`bigntk.solve.fit`.

    Returns:
        A :class:`Spectrum` ``(eigenvalues, eigenvectors, residuals, iterations, seconds)``.
        A distributed kernel's ``shift`` is removed from the eigenvalues.
    """
    start = time.perf_counter()
    op = as_operator(kernel, kind=kind, distributed=distributed, address=address,
                     workers=workers, name="kernel")  # fmt: skip
    owned = isinstance(op, DistributedKernel) and op is not kernel
    try:
        return _block_lanczos(op, _check_k(k, op.size), block, tol, maxiter, seed, start)
    finally:
        if owned:
            op.close()


def _check_k(k: Any, size: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k < size:
        raise ValueError(
            f"k must be an int with 1 <= k < {size} (the kernel matrix's size), got {k!r} "
            "instead; for every eigenpair use numpy.linalg.eigh on the dense matrix."
        )
    return int(k)


def _block_lanczos(op, k, block, tol, maxiter, seed, start) -> Spectrum:
    size = op.size
    b = min(int(block or max(2 * k, k + 8)), size)
    rng = np.random.default_rng(seed)
    basis, products = [np.linalg.qr(rng.standard_normal((size, b)))[0]], []
    for iteration in range(1, maxiter + 1):
        products.append(op.matmat(basis[-1]) - op.shift * basis[-1])
        q, aq = np.hstack(basis), np.hstack(products)
        theta, u, residuals = _ritz(q, aq, k)
        done = np.all(residuals <= tol * max(abs(theta[0]), np.finfo(float).tiny))
        logger.debug("block Lanczos %d: residual %.2e", iteration, residuals.max())
        if done or q.shape[1] + 1 > size or iteration == maxiter:
            break
        new = _orthonormal_next(q, products[-1], size - q.shape[1])
        if new is None:  # the Krylov space is invariant: the pairs are exact
            break
        basis.append(new)
    if not done:
        logger.warning("eigh_topk stopped after %d products with residual %.2e > tol %.1e",
                       iteration, residuals.max(), tol * abs(theta[0]))  # fmt: skip
    return Spectrum(theta, u, residuals, iteration, time.perf_counter() - start)


def _ritz(q: np.ndarray, aq: np.ndarray, k: int):
    """Top-``k`` Ritz values (largest first), vectors and residual norms on ``span(q)``."""
    t = q.T @ aq
    values, vectors = np.linalg.eigh((t + t.T) / 2)
    values, vectors = values[::-1][:k], vectors[:, ::-1][:, :k]
    u = q @ vectors
    residuals = np.linalg.norm(aq @ vectors - u * values, axis=0)
    return values, u, residuals


def _orthonormal_next(q: np.ndarray, w: np.ndarray, room: int) -> np.ndarray | None:
    """An orthonormal basis of ``w``'s part outside ``span(q)`` (at most ``room`` columns,
    deflated columns dropped), or None when nothing is left."""
    scale = max(float(np.linalg.norm(w)), np.finfo(float).tiny)
    for _ in range(2):  # classical Gram-Schmidt twice is as good as modified
        w = w - q @ (q.T @ w)
    new, r = np.linalg.qr(w)
    new = new[:, np.abs(np.diag(r)) > 1e-10 * scale][:, :room]
    if new.shape[1] == 0:
        return None
    return np.linalg.qr(new - q @ (q.T @ new))[0]
