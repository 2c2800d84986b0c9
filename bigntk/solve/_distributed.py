"""A stored kernel held by Ray actors: the store is read once, products come from memory.

:class:`DistributedKernel` splits the stored blocks (for a symmetric store the
upper ones only, ``bi <= bj``) into ``workers`` contiguous, balanced shards of
the row-major block order; each shard is a Ray actor
(:class:`~bigntk.solve._blocks.BlockServer`) that reads its blocks once into
host memory. The driver holds only vectors: a product sends ``v`` to every
actor once (``ray.put``) and sums their partial products in shard order, so the
result does not depend on timing.

An actor that dies (killed, its node lost) is started again on the next call:
it rereads its own blocks and the call is repeated; the answer is the same.
It has the interface of :class:`~bigntk.solve._operator.KernelOperator`, so the
preconditioners, :func:`~bigntk.solve.fit` and :func:`~bigntk.solve.eigh_topk`
use it as they use in-memory and Dask kernels.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from bigntk._ray import start_ray
from bigntk.errors import IncompleteKernelError, KernelShapeError
from bigntk.solve._blocks import BlockServer, LoadInfo
from bigntk.solve._operator import KernelOperator
from bigntk.store import KernelStore, open_kernel

logger = logging.getLogger(__name__)


def shard_blocks(blocks: np.ndarray, sizes: np.ndarray, workers: int) -> list[np.ndarray]:
    """Split ``blocks`` (``(m, 2)``, row-major) into ``workers`` contiguous runs of about
    equal total ``sizes`` (entries per block); no run is empty."""
    workers = max(1, min(workers, len(blocks)))
    cumulative = np.cumsum(sizes)
    targets = cumulative[-1] * np.arange(1, workers) / workers
    cuts = np.searchsorted(cumulative, targets, side="left") + 1
    cuts = np.unique(np.clip(cuts, 1, len(blocks) - 1)) if len(blocks) > 1 else []
    return [part for part in np.split(blocks, cuts) if len(part)]


class DistributedKernel:
    """The square kernel ``kind`` in the store at ``path`` as an ``(n*k, n*k)`` operator.

    Args:
        path: a complete kernel store of a train-train kernel ``(n, n)`` or
            ``(n, n, k, k)`` (a symmetric build, or an ``x2`` of the same size).
        kind: ``'ntk'`` or ``'nngp'``.
        workers: actors (default: the CPUs of the Ray cluster, at most one per block).
        address: the Ray cluster; None: the running one, else a new local Ray.
        num_cpus: CPUs each actor reserves.
        max_restarts: actor restarts allowed over the operator's life.

    Attributes:
        n, k, size: examples, outputs per example, ``n * k``.
        shift: added to the diagonal (the absolute regulariser).
        passes: products computed so far.
        restarts: actors started again after dying.
        loads: one :class:`LoadInfo` per actor start (restarts included).
        current: the :class:`LoadInfo` of each live actor.
    """

    is_dask = False

    def __init__(self, path: str, kind: str = "ntk", *, workers: int | None = None,
                 address: str | None = None, num_cpus: float = 1.0,
                 max_restarts: int = 8):  # fmt: skip
        import ray

        store = KernelStore.open(str(path))
        if kind not in store.kinds:
            raise KeyError(f"{path} holds the kinds {store.kinds}, not {kind!r}; pass "
                           f"kind={store.kinds[0]!r}.")  # fmt: skip
        self.path, self.kind, self.plan = str(path), kind, store.plan
        self.spec_hash = store.spec_hash
        self._check(store)
        self.shape, self.ndim = tuple(store.array(kind).shape), store.array(kind).ndim
        self.dtype = store.array(kind).dtype
        self.n = self.plan.n1
        self.k = 1 if self.ndim == 2 else self.shape[2]
        self.size = self.n * self.k
        self.shift, self.passes, self.restarts = 0.0, 0, 0
        self.max_restarts = max_restarts
        self._owns_ray, _ = start_ray(address)
        if workers is None:
            workers = int(ray.cluster_resources().get("CPU", 1) // max(num_cpus, 1e-3))
        self._actor_class = ray.remote(num_cpus=num_cpus, max_restarts=0)(BlockServer)
        self.shards = self._shards(workers)
        self.actors = [self._start(shard) for shard in self.shards]
        self.current: list[LoadInfo] = list(ray.get([a.info.remote() for a in self.actors]))
        self.loads: list[LoadInfo] = list(self.current)
        logger.info("%s: %d blocks on %d actors, %.3g GB read in %.1f s", path,
                    sum(x.blocks for x in self.loads), len(self.actors),
                    self.bytes_read / 1e9, max(x.seconds for x in self.loads))  # fmt: skip

    def _check(self, store: KernelStore) -> None:
        plan = self.plan
        shape = tuple(store.array(self.kind).shape)
        square = plan.n1 == plan.n2 and len(shape) in (2, 4)
        if plan.diagonal or not square or (len(shape) == 4 and shape[2] != shape[3]):
            raise KernelShapeError(
                f"A distributed solve needs a square train-train kernel (n, n) or (n, n, k, k); "
                f"{self.path} holds {self.kind} of shape {shape}"
                f"{' (a diagonal build)' if plan.diagonal else ''}. Build it with x2=None."
            )
        missing = int((plan.mask() & ~store.committed()).sum())
        if missing:
            raise IncompleteKernelError(
                f"{self.path} is missing {missing} of {plan.num_blocks} blocks; finish the "
                "build (run it again) before solving with it."
            )

    def _shards(self, workers: int) -> list[np.ndarray]:
        plan = self.plan
        blocks = np.argwhere(plan.mask())  # a symmetric plan's: the upper blocks
        rows = np.diff([plan.rows(b)[0] for b in range(plan.grid[0])] + [plan.n1])
        sizes = rows[blocks[:, 0]] * rows[blocks[:, 1]]
        return shard_blocks(blocks, sizes, workers)

    def _start(self, shard: np.ndarray):
        return self._actor_class.remote(self.path, self.kind, shard, self.plan.symmetric)

    # --- calls on every actor, restarting the dead ones ------------------------------------

    def _gather(self, method: str, *args) -> list:
        """``[actor.method(*args) for every actor]``, in shard order; a dead actor is
        started again (it rereads its blocks) and asked again."""
        import ray
        from ray.exceptions import RayActorError

        refs = [getattr(actor, method).remote(*args) for actor in self.actors]
        results = []
        for i, ref in enumerate(refs):
            while True:
                try:
                    results.append(ray.get(ref))
                    break
                except RayActorError as e:
                    ref = getattr(self._restart(i, e), method).remote(*args)
        return results

    def _restart(self, i: int, error: Exception):
        import ray

        if self.restarts >= self.max_restarts:
            raise RuntimeError(
                f"actor {i} of the distributed kernel {self.path} died again after "
                f"{self.restarts} restarts ({error}); raise max_restarts or check the workers' "
                "memory (each holds its blocks in host memory)."
            ) from error
        self.restarts += 1
        logger.warning("actor %d of %s died (%s); restarting it (it rereads its %d blocks)",
                       i, self.path, type(error).__name__, len(self.shards[i]))  # fmt: skip
        self.actors[i] = self._start(self.shards[i])
        self.current[i] = ray.get(self.actors[i].info.remote())
        self.loads.append(self.current[i])
        return self.actors[i]

    # --- the operator interface ------------------------------------------------------------

    @property
    def bytes_read(self) -> int:
        """Bytes read from the store by every actor start so far."""
        return sum(x.bytes_read for x in self.loads)

    @property
    def bytes_held(self) -> int:
        """Bytes of kernel held in the actors' memory now."""
        return sum(x.bytes_held for x in self.current) if self.actors else 0

    def matmat(self, v: np.ndarray) -> np.ndarray:
        """``(K + shift I) @ v`` for ``v`` ``(n*k, r)``: one call per actor, no store read."""
        import ray

        v = np.ascontiguousarray(v, dtype=np.float64)
        self.passes += 1
        parts = self._gather("matmat", ray.put(v))
        return np.sum(parts, axis=0) + self.shift * v

    def seconds_in_products(self) -> list[float]:
        """Seconds each live actor has spent computing products (since it started)."""
        return self._gather("seconds_in_products")

    def submatrix(self, rows, cols) -> np.ndarray:
        """``K[rows, cols]`` over examples, flattened to ``(len(rows)*k, len(cols)*k)``,
        float64, without the shift, from the actors' memory."""
        rows, cols = self._indices(rows), self._indices(cols)
        return np.sum(self._gather("take", rows, cols), axis=0)

    def _indices(self, index) -> np.ndarray:
        return np.arange(self.n)[index] if isinstance(index, slice) else np.asarray(index)

    def block_bounds(self, block_size: int | None = None) -> list[tuple[int, int]]:
        """Example ranges covering ``range(n)``: the store's blocks, or ``block_size`` rows."""
        step = int(block_size or self.plan.block)
        edges = np.unique(np.r_[np.arange(0, self.n, step), self.n])
        return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]

    def diagonal_blocks(self, block_size: int | None = None):
        """``[((start, stop), block), ...]``: flattened diagonal blocks without the shift."""
        if block_size not in (None, self.plan.block):
            return [((a, b), self.submatrix(slice(a, b), slice(a, b)))
                    for a, b in self.block_bounds(block_size)]  # fmt: skip
        held = [item for part in self._gather("diagonal_blocks") for item in part]
        return [((a, b), np.array(block)) for a, b, block in sorted(held, key=lambda x: x[0])]

    def diagonal(self, block_size: int | None = None) -> np.ndarray:
        """The ``(n*k,)`` diagonal without the shift."""
        return np.concatenate([np.diag(block) for _, block in self.diagonal_blocks()])

    def close(self) -> None:
        """Stop the actors (and the local Ray this operator started)."""
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    def __enter__(self) -> DistributedKernel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"DistributedKernel({self.path!r}, kind={self.kind!r}, shape={self.shape}, "
                f"actors={len(self.actors)}, held={self.bytes_held / 1e9:.3g} GB)")  # fmt: skip


def as_operator(kernel, *, kind: str = "ntk", distributed: bool = False,
                address: str | None = None, workers: int | None = None,
                name: str = "k_train_train"):  # fmt: skip
    """The operator for ``kernel``: a :class:`DistributedKernel` as is; a store path as a
    :class:`DistributedKernel` when ``distributed`` or ``address`` is given, else as the
    lazy Dask array of :func:`bigntk.open_kernel`; an array as a :class:`KernelOperator`."""
    if isinstance(kernel, DistributedKernel):
        return kernel
    remote = bool(distributed) or address is not None
    if isinstance(kernel, str | os.PathLike):
        if remote:
            return DistributedKernel(str(kernel), kind, workers=workers, address=address)
        return KernelOperator(open_kernel(str(kernel), kind), name=name)
    if remote:
        raise ValueError(
            f"distributed=True and address= need a kernel store path as {name}, got a "
            f"{type(kernel).__name__}; pass the path given to bigntk.build_kernel."
        )
    return KernelOperator(kernel, name=name)


def store_folder(kernel) -> str | None:
    """The local store folder behind ``kernel`` (a path or a :class:`DistributedKernel`),
    or None (an array, or a URL)."""
    path = kernel.path if isinstance(kernel, DistributedKernel) else kernel
    if isinstance(path, str | os.PathLike) and "://" not in str(path):
        return str(path)
    return None
