"""Preconditioners for conjugate gradients on ``K + shift I``.

* :class:`BlockJacobi`: the inverse of the block diagonal of ``K + shift I``
  (one inverse per diagonal block, by Cholesky; for a Dask kernel a block is one
  stored chunk, so building it reads only the diagonal chunks).
* :class:`Nystrom`: a rank-``r`` Nyström approximation ``K ≈ U Λ Uᵀ`` from
  ``r`` landmark columns drawn uniformly at random (one read of those columns),
  inverted exactly on its range as in Frangella, Tropp & Udell (2023),
  "Randomized Nyström preconditioning":
  ``P⁻¹ = (λ_r + shift) U (Λ + shift I)⁻¹ Uᵀ + (I − U Uᵀ)``.
  Kernels of trained or random networks have fast-decaying spectra, which is
  what this preconditioner removes; it is usually far better than block-Jacobi.

Each is a callable ``(n*k, r) -> (n*k, r)`` applying ``P⁻¹``.
"""

from __future__ import annotations

import numpy as np

from bigntk.errors import NotPositiveDefiniteError
from bigntk.solve._operator import KernelOperator


def not_positive_definite(what: str, shift: float) -> NotPositiveDefiniteError:
    """The error for a kernel that is not positive definite enough, with the fix."""
    return NotPositiveDefiniteError(
        f"{what}: the regularised kernel K + {shift:.3g} I is not positive definite (enough) "
        "to solve with. Pass a larger diag_reg (e.g. 10x the current one); a finite network's "
        "NNGP and NTK are often singular, and float32 kernels carry rounding errors of about "
        "1e-7 times their largest entry."
    )


class BlockJacobi:
    """``P⁻¹``: the inverse of the block diagonal of ``K + shift I``.

    Args:
        op: the operator.
        block_size: examples per block; default: the Dask row chunks (else 512).
    """

    name = "jacobi"

    def __init__(self, op: KernelOperator, block_size: int | None = None):
        import scipy.linalg  # imported on use: it is slow to import

        self.k = op.k
        blocks = op.diagonal_blocks(block_size)
        self.bounds = [bounds for bounds, _ in blocks]
        # explicit inverses (from Cholesky factors): applying them is one matmul per block,
        # ~50x faster than triangular solves with few right-hand sides
        self.inverses = []
        for (a, b), block in blocks:
            block[np.diag_indices_from(block)] += op.shift
            try:
                factor = scipy.linalg.cho_factor(block, lower=True)
            except np.linalg.LinAlgError as e:
                raise not_positive_definite(
                    f"block-Jacobi preconditioner, diagonal block of examples {a}:{b}", op.shift
                ) from e
            inverse = scipy.linalg.cho_solve(factor, np.eye(len(block)))
            self.inverses.append((inverse + inverse.T) / 2)

    def __call__(self, r: np.ndarray) -> np.ndarray:
        out = np.empty_like(r)
        for (a, b), inverse in zip(self.bounds, self.inverses, strict=True):
            rows = slice(a * self.k, b * self.k)
            out[rows] = inverse @ r[rows]
        return out


class Nystrom:
    """``P⁻¹`` from a rank-``rank`` Nyström approximation of ``K``.

    Args:
        op: the operator.
        rank: landmark examples (``rank * k`` columns); at most ``n``.
        seed: seed of the landmark draw.
    """

    name = "nystrom"

    def __init__(self, op: KernelOperator, rank: int = 256, seed: int = 0):
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise ValueError(f"rank must be a positive int, got {rank!r} instead.")
        k, shift = op.k, op.shift
        rng = np.random.default_rng(seed)
        landmarks = np.sort(rng.choice(op.n, size=min(rank, op.n), replace=False))
        columns = op.submatrix(slice(None), landmarks)  # (n*k, r*k)
        rows = (landmarks[:, None] * k + np.arange(k)).ravel()
        core = columns[rows]
        core = (core + core.T) / 2
        eigvals, eigvecs = np.linalg.eigh(core)
        if not np.all(np.isfinite(eigvals)):
            raise not_positive_definite("Nystrom preconditioner: non-finite kernel entries", shift)
        # drop the core's null space and rounding noise (kernels are often stored in float32)
        cutoff = max(eigvals[-1], 0.0) * core.shape[0] * np.finfo(np.float32).eps
        keep = eigvals > cutoff
        if not keep.any():
            raise not_positive_definite("Nystrom preconditioner: the landmark block is zero", shift)
        factor = columns @ (eigvecs[:, keep] / np.sqrt(eigvals[keep]))  # K ≈ factor factorᵀ
        u, s, _ = np.linalg.svd(factor, full_matrices=False)
        self.u = u
        self.eigvals = s**2  # decreasing
        self.shift = shift
        self.rank = int(keep.sum())
        smallest = self.eigvals[-1] + shift
        if smallest <= 0:
            raise not_positive_definite("Nystrom preconditioner", shift)
        self.scale = (smallest / (self.eigvals + shift))[:, None]  # (λ_r + μ) / (λ_i + μ)

    def __call__(self, r: np.ndarray) -> np.ndarray:
        coef = self.u.T @ r
        return r + self.u @ ((self.scale - 1.0) * coef)


def make_preconditioner(
    name: str | None, op: KernelOperator, *, rank: int, block_size: int | None, seed: int
):
    """The preconditioner called ``name`` (``'nystrom'``, ``'jacobi'`` or None) for ``op``."""
    if name is None or name == "none":
        return None
    if name == "nystrom":
        return Nystrom(op, rank=rank, seed=seed)
    if name == "jacobi":
        return BlockJacobi(op, block_size=block_size)
    raise ValueError(f"preconditioner must be 'nystrom', 'jacobi' or None, got {name!r} instead.")
