"""bigntk.solve against dense SciPy solves: random PSD kernels, real NTKs/NNGPs, a real store."""

import functools
import sys

import dask.array as da
import numpy as np
import pytest
import scipy.linalg

import bigntk as nt
from bigntk.errors import ConvergenceWarning, KernelShapeError, NotPositiveDefiniteError
from tests import builder_models as bm

CG = [
    ("cg", "nystrom"),
    ("cg", "jacobi"),
    ("cg", None),
]
METHODS = [("cholesky", None), *CG]


def random_psd(n, k=1, rank=None, seed=0):
    """A PSD kernel (n, n) or (n, n, k, k) of the given rank (full by default)."""
    rng = np.random.default_rng(seed)
    rank = rank or n * k
    g = rng.standard_normal((n * k, rank)) / np.sqrt(rank)
    flat = g @ g.T + 0.05 * np.eye(n * k) * (rank >= n * k)
    return flat if k == 1 else flat.reshape(n, k, n, k).transpose(0, 2, 1, 3)


def flat(kernel):
    """(a, b) or (a, b, k, k) -> the (a*k, b*k) matrix, example-major."""
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim == 2:
        return kernel
    a, b, k, _ = kernel.shape
    return kernel.transpose(0, 2, 1, 3).reshape(a * k, b * k)


def dense_posterior(k_tt, y, k_st, k_ss_diag, reg):
    """Mean and variance by scipy.linalg.solve on the flattened matrices."""
    a = flat(k_tt) + reg * np.eye(flat(k_tt).shape[0])
    y2 = np.asarray(y, dtype=np.float64).reshape(a.shape[0], -1)
    q = flat(k_st)
    mean = (q @ scipy.linalg.solve(a, y2, assume_a="pos")).reshape((q.shape[0] // (
        1 if np.ndim(k_tt) == 2 else k_tt.shape[2]), *np.shape(y)[1:]))  # fmt: skip
    if k_ss_diag is None:
        return mean, None
    explained = q @ scipy.linalg.solve(a, q.T, assume_a="pos")
    if np.ndim(k_tt) == 2:
        return mean, k_ss_diag - np.diag(explained)
    k = k_tt.shape[2]
    m = q.shape[0] // k
    blocks = explained.reshape(m, k, m, k)[np.arange(m), :, np.arange(m), :]
    return mean, k_ss_diag - blocks


def close(got, want, rtol):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


@pytest.mark.parametrize("method,precond", METHODS)
@pytest.mark.parametrize("k,y_tail", [(1, ()), (1, (4,)), (3, (3,)), (2, (2, 3))])
def test_random_psd_alpha_equals_scipy_solve(method, precond, k, y_tail):
    n = 37
    kernel = random_psd(n, k, seed=1)
    y = np.random.default_rng(2).standard_normal((n, *y_tail))
    if method == "cg":
        kernel = da.from_array(kernel, chunks=(10, 10, k, k)[: kernel.ndim])
    fitted = nt.solve.fit(kernel, y, diag_reg=1e-3, method=method, preconditioner=precond,
                          rank=12, tol=1e-12, progress=False)  # fmt: skip
    a = flat(np.asarray(kernel)) + fitted.info.diag_reg * np.eye(n * k)
    want = scipy.linalg.solve(a, y.reshape(n * k, -1)).reshape(y.shape)
    assert fitted.alpha.shape == y.shape
    close(fitted.alpha, want, 1e-9)
    assert fitted.info.method == method and fitted.info.preconditioner == precond
    assert fitted.info.converged and fitted.info.residual < 1e-11
    # relative regulariser: diag_reg times the mean of the diagonal
    assert fitted.info.diag_reg == pytest.approx(1e-3 * np.mean(np.diag(flat(np.asarray(kernel)))))


def test_preconditioners_cut_iterations_on_a_low_rank_kernel():
    n = 120
    kernel = da.from_array(random_psd(n, rank=30, seed=3), chunks=40)
    y = np.random.default_rng(4).standard_normal((n, 2))
    iterations = {}
    for precond in ("nystrom", "jacobi", None):
        fitted = nt.solve.fit(kernel, y, diag_reg=1e-4, preconditioner=precond, rank=40,
                              tol=1e-10, progress=False)  # fmt: skip
        iterations[precond] = fitted.info.iterations
        # one pass per iteration, plus the final residual check
        assert fitted.info.passes == fitted.info.iterations + 1
    # a rank-40 Nystrom captures the rank-30 kernel: CG converges almost at once
    assert iterations["nystrom"] <= 3 < iterations[None]


@functools.cache
def real_kernels(trace_axes):
    """{kind: (train-train, test-train, test-test)} of a small MLP, NumPy."""
    f, params = bm.mlp(width=32, out=3)
    x_train, x_test = bm.data(24, seed=1), bm.data(7, seed=2)
    kernel_fn = nt.empirical_kernel_fn(f, trace_axes=trace_axes, vmap_axes=0)
    pairs = [(x_train, None), (x_test, x_train), (x_test, None)]
    kernels = [kernel_fn(a, b, None, params) for a, b in pairs]
    return {kind: tuple(np.asarray(getattr(k, kind)) for k in kernels) for kind in ("ntk", "nngp")}


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
@pytest.mark.parametrize("trace_axes", [(-1,), ()], ids=["traced", "per-output"])
@pytest.mark.parametrize("method,precond", METHODS)
def test_real_kernels_posterior_equals_dense(kind, trace_axes, method, precond):
    k_tt, k_st, k_ss = real_kernels(trace_axes)[kind]
    k = 1 if trace_axes else 3
    y = np.eye(3)[np.arange(24) % 3] if trace_axes else np.eye(3)[np.arange(24) % 3] - 1 / 3
    train = da.from_array(k_tt, chunks=(8, 8, k, k)[: k_tt.ndim]) if method == "cg" else k_tt
    pred = nt.kernel_regression(train, y, k_st, k_ss, diag_reg=1e-3, method=method,
                                preconditioner=precond, rank=10, tol=1e-12,
                                progress=False)  # fmt: skip
    diag = np.diagonal(k_ss, axis1=0, axis2=1)
    diag = diag if k == 1 else np.moveaxis(diag, -1, 0)
    want_mean, want_var = dense_posterior(k_tt, y, k_st, diag, pred.info.diag_reg)
    assert pred.mean.shape == (7, 3) and pred.variance.shape == ((7,) if k == 1 else (7, 3, 3))
    close(pred.mean, want_mean, 1e-7)
    close(pred.variance, want_var, 1e-6)
    per_output = pred.variance if k == 1 else np.diagonal(pred.variance, axis1=1, axis2=2)
    assert np.all(per_output > -1e-9)  # a posterior variance is non-negative


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.xdist_group("ray")
def test_dask_kernels_from_a_real_store(tmp_path):
    """One symmetric build of K([train; test]) (trace_axes=(), ntk and nngp) gives every piece:
    train-train, test-train and test-test slices, and the traced kernel as the mean of the
    (k, k) diagonal."""
    f, params = bm.mlp(width=32, out=3)
    n, m = 20, 6
    x = np.concatenate([bm.data(n, seed=1), bm.data(m, seed=2)])
    path = str(tmp_path / "k.zarr")
    nt.build_kernel(f, params, x, None, path=path, kinds=("nngp", "ntk"), trace_axes=(),
                    block_size=8, progress=False)  # fmt: skip
    y = np.eye(3)[np.arange(n) % 3]
    for kind in ("ntk", "nngp"):
        full = nt.open_kernel(path, kind)  # (26, 26, 3, 3) dask, chunks of 8
        assert isinstance(full, da.Array) and full.chunks[0] == (8, 8, 8, 2)
        traced = da.einsum("ijaa->ij", full) / 3
        dense_full, dense_traced = full.compute(), traced.compute()
        cases = [(traced, dense_traced, y, "nystrom"), (full, dense_full, y - 1 / 3, "jacobi")]
        if kind == "nngp":  # the other preconditioner for each layout
            cases = [(traced, dense_traced, y, "jacobi"), (full, dense_full, y - 1 / 3, "nystrom")]
        for kernel, dense, targets, precond in cases:
            pred = nt.kernel_regression(
                kernel[:n, :n], targets, kernel[n:, :n], kernel[n:, n:], diag_reg=1e-3,
                preconditioner=precond, rank=8, tol=1e-12, progress=False,
            )  # fmt: skip
            assert pred.info.method == "cg"
            diag = np.diagonal(dense[n:, n:], axis1=0, axis2=1)
            diag = diag if dense.ndim == 2 else np.moveaxis(diag, -1, 0)
            want_mean, want_var = dense_posterior(
                dense[:n, :n], targets, dense[n:, :n], diag, pred.info.diag_reg
            )
            close(pred.mean, want_mean, 1e-7)
            close(pred.variance, want_var, 1e-6)
    # the NTK regression fits its training targets almost exactly (tiny ridge)
    k_ntk = da.einsum("ijaa->ij", nt.open_kernel(path, "ntk")) / 3
    fit_train = nt.kernel_regression(k_ntk[:n, :n], y, k_ntk[:n, :n], diag_reg=1e-6,
                                     tol=1e-12, progress=False)  # fmt: skip
    np.testing.assert_array_equal(fit_train.mean.argmax(1), y.argmax(1))


def test_shape_errors_name_the_argument_and_shapes():
    k = random_psd(6)
    y = np.ones(6)
    with pytest.raises(KernelShapeError, match=r"k_train_train must be square.*\(6, 5\)"):
        nt.solve.fit(k[:, :5], y)
    with pytest.raises(KernelShapeError, match=r"\(n1, n2\).*\(n1, n2, k, k\).*\(6, 6, 2\)"):
        nt.solve.fit(np.ones((6, 6, 2)), y)
    with pytest.raises(KernelShapeError, match=r"y_train must have shape \(6,\) or \(6, r\)"):
        nt.solve.fit(k, np.ones(5))
    with pytest.raises(KernelShapeError, match=r"y_train must have shape \(3, 2\) or \(3, 2, r\)"):
        nt.solve.fit(random_psd(3, 2), np.ones((3, 3)))
    fitted = nt.solve.fit(k, y)
    with pytest.raises(KernelShapeError, match=r"k_test_train must have shape \(m, n\).*n = 6"):
        fitted.predict(np.ones((2, 5)))
    with pytest.raises(KernelShapeError, match=r"k_test_train must have shape \(m, n\)"):
        fitted.predict(np.ones((2, 6, 1, 1)))
    with pytest.raises(KernelShapeError, match=r"k_test_test must be.*\(2,\).*\(2, 2\).*\(3,\)"):
        fitted.predict(np.ones((2, 6)), np.ones(3))
    with pytest.raises(KernelShapeError, match="must hold floats"):
        nt.solve.fit(np.eye(3, dtype=int), np.ones(3))
    with pytest.raises(ValueError, match="method must be one of"):
        nt.solve.fit(k, y, method="lu")
    with pytest.raises(ValueError, match="preconditioner must be 'nystrom', 'jacobi' or None"):
        nt.solve.fit(k, y, method="cg", preconditioner="ilu")


@pytest.mark.parametrize("method,precond", METHODS)
def test_indefinite_kernel_asks_for_a_larger_regulariser(method, precond):
    kernel = random_psd(20, seed=5) - 0.6 * np.eye(20)  # smallest eigenvalues < 0
    assert np.linalg.eigvalsh(kernel)[0] < -0.1
    with pytest.raises(NotPositiveDefiniteError, match="larger diag_reg") as e:
        nt.solve.fit(kernel, np.ones(20), diag_reg=0.0, method=method, preconditioner=precond,
                     rank=20, progress=False)  # fmt: skip
    assert isinstance(e.value, ValueError)
    # the same kernel with enough regularisation solves
    fitted = nt.solve.fit(kernel, np.ones(20), diag_reg=1.0, diag_reg_absolute_scale=True,
                          method=method, preconditioner=precond, progress=False)  # fmt: skip
    assert fitted.info.residual < 1e-5


def test_singular_kernel_without_regulariser_is_refused():
    kernel = random_psd(30, rank=5, seed=6)
    with pytest.raises(NotPositiveDefiniteError, match="Cholesky factorisation failed"):
        nt.solve.fit(kernel - 1e-9 * np.eye(30), np.ones(30), diag_reg=0.0)


def test_nan_kernel_is_refused():
    kernel = random_psd(16)
    kernel[3, 5] = kernel[5, 3] = np.nan
    for method in ("cholesky", "cg"):
        with pytest.raises(NotPositiveDefiniteError, match="NaN"):
            nt.solve.fit(da.from_array(kernel, chunks=8), np.ones(16), method=method,
                         preconditioner=None, progress=False)  # fmt: skip


def test_maxiter_warns_and_reports_not_converged():
    kernel = random_psd(60, seed=7)
    with pytest.warns(ConvergenceWarning, match="maxiter=2"):
        fitted = nt.solve.fit(kernel, np.ones(60), method="cg", preconditioner=None,
                              maxiter=2, tol=1e-12, progress=False)  # fmt: skip
    assert not fitted.info.converged and fitted.info.iterations == 2
    assert fitted.info.residual > 1e-12


def test_cg_reads_the_dask_kernel_chunk_by_chunk_once_per_pass():
    dense = random_psd(40, seed=8)
    reads = []

    def load(block_info=None):
        (r0, r1), (c0, c1) = block_info[None]["array-location"]
        reads.append((r1 - r0, c1 - c0))
        return dense[r0:r1, c0:c1]

    kernel = da.map_blocks(load, chunks=((10,) * 4, (10,) * 4), dtype=np.float64)
    fitted = nt.solve.fit(kernel, np.ones(40), preconditioner=None, diag_reg=1e-3,
                          tol=1e-10, progress=False)  # fmt: skip
    assert max(reads) == (10, 10)  # never more than one chunk at a time
    diagonal_reads = 4  # the relative regulariser reads the diagonal chunks once
    assert len(reads) == 16 * fitted.info.passes + diagonal_reads
    want = scipy.linalg.solve(dense + fitted.info.diag_reg * np.eye(40), np.ones(40))
    close(fitted.alpha, want, 1e-8)


def test_progress_bar_only_on_a_terminal(capsys, monkeypatch):
    kernel = da.from_array(random_psd(30), chunks=10)
    nt.solve.fit(kernel, np.ones(30), progress=True)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    nt.solve.fit(kernel, np.ones(30), progress=True)
    assert "bigntk solve" in capsys.readouterr().err
    nt.solve.fit(kernel, np.ones(30), progress=False)
    assert capsys.readouterr().err == ""
