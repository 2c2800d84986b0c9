"""bigntk.solve on Ray actors (DistributedKernel) against dense NumPy/SciPy on real stores:
products, the store read once, fits and posteriors, killed actors, resumed solves, eigenpairs."""

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

import bigntk as nt
from bigntk.solve import DistributedKernel
from bigntk.store import KernelStore
from tests import builder_models as bm
from tests.test_format_v2 import as_format_1
from tests.test_solve import flat

pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.xdist_group("ray")]

BLOCK = 32


@pytest.fixture(scope="module")
def stores(tmp_path_factory, ray_cluster):
    """Two symmetric builds: traced (200, 200) ntk+nngp with a partial last block (format
    2: upper blocks only), and per-output (96, 96, 3, 3) ntk rewritten as format 1 (mirrors
    on disk)."""
    f, params = bm.mlp(width=32, out=3)
    root = tmp_path_factory.mktemp("dsolve")
    traced, full = str(root / "traced.zarr"), str(root / "full.zarr")
    nt.build_kernel(f, params, bm.data(200, seed=1), None, path=traced, kinds=("ntk", "nngp"),
                    block_size=BLOCK, progress=False)  # fmt: skip
    nt.build_kernel(f, params, bm.data(96, seed=2), None, path=full, trace_axes=(),
                    block_size=BLOCK, progress=False)  # fmt: skip
    dense = {
        (traced, "ntk"): nt.open_kernel(traced, "ntk").compute(),
        (traced, "nngp"): nt.open_kernel(traced, "nngp").compute(),
        (full, "ntk"): nt.open_kernel(full, "ntk").compute(),
    }
    as_format_1(full)
    return traced, full, dense


@pytest.fixture(scope="module")
def ops(stores):
    """The stores' kernels held by 3 or 2 actors each (small CPU shares: the session Ray
    has 2 CPUs)."""
    traced, full, _ = stores
    held = {key: DistributedKernel(key[0], key[1], workers=workers, num_cpus=0.1)
            for key, workers in [((traced, "ntk"), 3), ((full, "ntk"), 3),
                                 ((traced, "nngp"), 2)]}  # fmt: skip
    yield held
    for op in held.values():
        op.close()


def chunk_bytes(path, kind, upper_only):
    """Bytes of the stored chunk files of ``kind`` (all, or blocks bi <= bj only), format 3's
    packed diagonal blocks included."""
    packed = Path(path) / ("diagonal_" + kind) / "c"
    total = sum(f.stat().st_size for f in packed.rglob("*") if f.is_file())
    for file in (Path(path) / kind / "c").rglob("*"):
        if file.is_file():
            bi, bj = (int(p) for p in file.relative_to(Path(path) / kind / "c").parts[:2])
            total += file.stat().st_size if (bi <= bj or not upper_only) else 0
    return total


@pytest.mark.parametrize("which", ["traced", "full"])
def test_products_equal_dense_and_the_store_is_read_once(stores, ops, which):
    traced, full, dense = stores
    path = traced if which == "traced" else full
    matrix = flat(dense[(path, "ntk")])
    rng = np.random.default_rng(0)
    op = ops[(path, "ntk")]
    assert len(op.actors) == 3 and op.size == matrix.shape[0]
    shards = np.concatenate(op.shards)
    assert np.all(shards[:, 0] <= shards[:, 1])  # upper blocks only
    assert len(shards) == len(np.unique(shards, axis=0)) == op.plan.num_blocks
    v = rng.standard_normal((op.size, 4))
    passes = op.passes
    np.testing.assert_allclose(op.matmat(v), matrix @ v, rtol=1e-10, atol=1e-10)
    rows, cols = rng.choice(op.n, 17, replace=False), rng.choice(op.n, 9, replace=False)
    np.testing.assert_array_equal(op.submatrix(rows, cols), flat(
        dense[(path, "ntk")][np.ix_(rows, cols)]))  # fmt: skip
    np.testing.assert_array_equal(op.diagonal(), np.diag(matrix))
    for _ in range(3):
        op.matmat(v)
    assert op.passes == passes + 4
    # read once: the upper blocks' chunks (+ metadata), not the format-1 mirrors
    upper, stored = chunk_bytes(path, "ntk", True), chunk_bytes(path, "ntk", False)
    read = sum(x.bytes_read for x in op.current)  # the live actors' reads (no restarts)
    assert upper <= read <= 1.05 * upper
    if KernelStore.open(path).mirrored:  # format 1 ("full"): the mirrors were not read
        assert read < 0.75 * stored
    else:  # format 3 ("traced"): nothing but the upper blocks is stored
        assert stored == upper


def dense_solve(matrix, y, reg):
    return scipy.linalg.solve(matrix + reg * np.eye(len(matrix)), y, assume_a="pos")


@pytest.mark.parametrize("precond", ["nystrom", "jacobi", None, "cholesky"])
def test_fit_and_posterior_equal_scipy(stores, ops, precond):
    traced, full, dense = stores
    for path, kind in [(traced, "nngp"), (full, "ntk")]:
        kernel = dense[(path, kind)]
        matrix = flat(kernel)
        k = 1 if kernel.ndim == 2 else kernel.shape[2]
        y = np.random.default_rng(1).standard_normal((kernel.shape[0], *(k,) * (k > 1), 2))
        method = "cholesky" if precond == "cholesky" else "cg"
        fitted = nt.solve.fit(ops[(path, kind)], y, diag_reg=1e-3, method=method,
                              preconditioner=None if method == "cholesky" else precond,
                              rank=40, tol=1e-11, progress=False, checkpoint=False)  # fmt: skip
        assert fitted.info.method == method
        reg = fitted.info.diag_reg
        assert reg == pytest.approx(1e-3 * np.mean(np.diag(matrix)))
        want = dense_solve(matrix, y.reshape(len(matrix), -1), reg)
        np.testing.assert_allclose(fitted.alpha.reshape(want.shape), want, rtol=1e-8,
                                   atol=1e-8 * np.abs(want).max())  # fmt: skip
        # posterior at 10 training examples seen as test points
        pred = fitted.predict(kernel[:10], kernel[:10, :10])
        q = flat(kernel[:10])
        np.testing.assert_allclose(pred.mean.reshape(-1, 2), q @ want, rtol=1e-7,
                                   atol=1e-7 * np.abs(q @ want).max())  # fmt: skip
        explained = q @ dense_solve(matrix, q.T, reg)
        prior = flat(kernel[:10, :10])
        want_var = (prior - explained).reshape(10, k, 10, k)[np.arange(10), :, np.arange(10)]
        got = pred.variance if k > 1 else pred.variance[:, None, None]
        np.testing.assert_allclose(got, want_var, atol=1e-7 * np.abs(prior).max())
        assert fitted.info.bytes_read <= 1.05 * chunk_bytes(path, kind, True)


class Stop(Exception):
    """Stands for the driver being killed at an iteration."""


def test_killed_actor_is_restarted_and_the_solve_is_unchanged(stores, ops):
    import ray

    traced, _, dense = stores
    y = np.random.default_rng(2).standard_normal((200, 3))
    args = dict(diag_reg=1e-3, preconditioner="nystrom", rank=40, tol=1e-9, progress=False,
                checkpoint=False)  # fmt: skip
    op = ops[(traced, "ntk")]
    plain = nt.solve.fit(op, y, **args)
    first_load, pid = op.bytes_read, op.current[1].pid

    def kill_at_3(state):
        if state.iterations == 3:
            ray.kill(op.actors[1])

    killed = nt.solve.fit(op, y, callback=kill_at_3, **args)
    assert op.restarts == 1 and len(op.loads) == len(op.actors) + 1
    assert op.current[1].pid != pid
    assert op.bytes_read == first_load + op.loads[1].bytes_read  # that shard reread
    assert killed.info.iterations == plain.info.iterations > 3
    np.testing.assert_allclose(killed.alpha, plain.alpha, rtol=1e-12, atol=0)
    want = dense_solve(flat(dense[(traced, "ntk")]), y, plain.info.diag_reg)
    np.testing.assert_allclose(plain.alpha, want, rtol=1e-7, atol=1e-7 * np.abs(want).max())


def test_restarted_fit_resumes_from_the_checkpoint_in_the_store(stores):
    traced, _, dense = stores
    y = np.random.default_rng(3).standard_normal(200)
    args = dict(kind="ntk", distributed=True, workers=1, diag_reg=1e-2, preconditioner=None,
                tol=1e-8, progress=False)  # fmt: skip
    plain = nt.solve.fit(traced, y, checkpoint=False, **args)
    plain.close()

    def die_at_7(state):
        if state.iterations == 7:
            raise Stop

    with pytest.raises(Stop):
        nt.solve.fit(traced, y, checkpoint_every=3, callback=die_at_7, **args)
    saved = list((Path(traced) / "solve").glob("cg-*.npz"))
    assert len(saved) == 1
    resumed = nt.solve.fit(traced, y, checkpoint_every=3, **args)
    resumed.close()
    # predict() also takes a store path (here the train-train store as the "test" kernel)
    np.testing.assert_allclose(resumed.predict(traced).mean, dense[(traced, "ntk")]
                               @ resumed.alpha, rtol=1e-10)  # fmt: skip
    assert resumed.info.resumed_from == 6
    assert resumed.info.iterations == plain.info.iterations > 7
    assert resumed.info.passes == plain.info.passes - 6
    np.testing.assert_allclose(resumed.alpha, plain.alpha, rtol=1e-12, atol=0)
    # the store still opens and reads as before with the checkpoint folder inside it
    reopened = KernelStore.open(traced)
    assert reopened.committed()[reopened.plan.mask()].all()
    np.testing.assert_array_equal(nt.open_kernel(traced).compute(), dense[(traced, "ntk")])
    # a different problem (targets) does not pick up this checkpoint
    other = nt.solve.fit(traced, 2 * y, **args)
    other.close()
    assert other.info.resumed_from == 0 and len(os.listdir(Path(traced) / "solve")) == 2


def test_in_memory_fit_checkpoints_to_a_given_folder(stores, tmp_path):
    traced, _, dense = stores
    kernel, y = dense[(traced, "ntk")], np.random.default_rng(4).standard_normal(200)
    args = dict(method="cg", preconditioner=None, diag_reg=1e-2, tol=1e-10, progress=False,
                checkpoint=tmp_path / "ckpt", checkpoint_every=2)  # fmt: skip
    plain = nt.solve.fit(kernel, y, **{**args, "checkpoint": False})

    def die_at_5(state):
        if state.iterations == 5:
            raise Stop

    with pytest.raises(Stop):
        nt.solve.fit(kernel, y, callback=die_at_5, **args)
    resumed = nt.solve.fit(kernel, y, **args)
    assert resumed.info.resumed_from == 4 and resumed.info.iterations == plain.info.iterations
    np.testing.assert_allclose(resumed.alpha, plain.alpha, rtol=1e-12, atol=0)
    changed = kernel.copy()
    changed[0, 0] *= 2  # another kernel: its own checkpoint, not this one
    assert nt.solve.fit(changed, y, **args).info.resumed_from == 0


@pytest.mark.parametrize("source", ["numpy", "dask", "distributed"])
def test_eigh_topk_equals_numpy_eigh(stores, ops, source):
    traced, full, dense = stores
    for path in (traced, full):
        matrix = flat(dense[(path, "ntk")])
        want_values, want_vectors = np.linalg.eigh(matrix)
        want_values, want_vectors = want_values[::-1][:6], want_vectors[:, ::-1][:, :6]
        kernel = {"numpy": dense[(path, "ntk")], "dask": nt.open_kernel(path),
                  "distributed": ops[(path, "ntk")]}[source]  # fmt: skip
        got = nt.solve.eigh_topk(kernel, 6, tol=1e-10)
        np.testing.assert_allclose(got.eigenvalues, want_values, rtol=1e-9)
        overlap = np.abs(np.sum(got.eigenvectors * want_vectors, axis=0))
        np.testing.assert_allclose(overlap, 1.0, atol=1e-6)
        assert got.iterations < 30 and np.all(got.residuals <= 1e-10 * want_values[0])


def test_eigh_topk_on_a_store_path(stores):
    traced, _, dense = stores
    want = np.linalg.eigvalsh(dense[(traced, "nngp")])[::-1][:3]
    got = nt.solve.eigh_topk(traced, 3, kind="nngp", distributed=True, workers=1, tol=1e-10)
    np.testing.assert_allclose(got.eigenvalues, want, rtol=1e-9)


def test_errors_say_what_to_pass(stores):
    traced, _, dense = stores
    with pytest.raises(ValueError, match="store path"):
        nt.solve.fit(dense[(traced, "ntk")], np.ones(200), distributed=True)
    with pytest.raises(ValueError, match="1 <= k < 200"):
        nt.solve.eigh_topk(dense[(traced, "ntk")], 200)
    with pytest.raises(KeyError, match="kind="):
        DistributedKernel(traced, "empirical")
