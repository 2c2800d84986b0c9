"""``build_kernel``: plan the blocks, schedule them on Ray workers, commit them, resume.

The driver keeps a bounded number of blocks in flight (``ray.wait``), records
finished blocks in the store's manifest in batches, retries failed blocks,
relies on Ray to restart dead actors, and on a fresh start schedules only the
blocks the manifest does not list. The same call resumes an interrupted build.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from bigntk.build._checks import check_arguments, check_source_dtypes
from bigntk.build._checksum import repair as repair_store
from bigntk.build._data import MemorySource, Source, as_source
from bigntk.build._failures import error_summary, start_workers, store_full_errors
from bigntk.build._fs import check_store_url, forwarded_env, source_urls
from bigntk.build._lease import writer_lease
from bigntk.build._resources import WorkerResources
from bigntk.build._spec import (
    canonical_kinds,
    default_block_size,
    fingerprint_model,
    output_axes,
)
from bigntk.build._store import KernelStore
from bigntk.build._worker import BlockWorker
from bigntk.empirical._implementation import DEFAULT_NTK_IMPLEMENTATION, get_implementation
from bigntk.errors import BigNTKError, BlockFailedError, BuildInputError

logger = logging.getLogger(__name__)

_COMMIT_EVERY_S = 0.5
_MAX_RETRIES = 2


@dataclasses.dataclass
class BuildResult:
    """What a build did.

    Attributes:
        path: the store.
        total: blocks in the plan.
        computed: blocks computed by this run.
        skipped: blocks already committed (resumed).
        wall_s: wall time from planning to the last commit (workers' start included).
        ray_start_s: time spent starting Ray (0 when it was already running).
        workers_start_s: time until every worker actor was ready (part of ``wall_s``).
        entries: kernel entries (rows × columns) computed by this run.
    """

    path: str
    total: int
    computed: int
    skipped: int
    wall_s: float
    ray_start_s: float
    workers_start_s: float
    entries: int

    @property
    def entries_per_s(self) -> float:
        return self.entries / self.wall_s if self.wall_s else 0.0

    def summary(self) -> str:
        return (
            f"bigntk: {self.path}: {self.computed} blocks computed, {self.skipped} resumed, "
            f"{self.total} total in {self.wall_s:.1f}s ({self.entries_per_s:,.0f} entries/s; "
            f"workers start {self.workers_start_s:.1f}s, Ray start {self.ray_start_s:.1f}s)"
        )


def _start_ray(address: str | None) -> tuple[bool, float]:
    """Connect to Ray; ``address=None`` starts a new local Ray unless one is running here."""
    import ray

    if ray.is_initialized():
        return False, 0.0
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Ray starts its daemons with fork+exec; JAX warns about any fork once it runs,
        # but an immediate exec shares no JAX state.
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        if address is None:
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    return True, time.perf_counter() - start


def _validate_sources(x1: Source, x2: Source | None) -> None:
    for name, src in (("x1", x1), ("x2", x2)):
        if src is None:
            continue
        if len(src.shape) < 1 or src.shape[0] == 0:
            raise BuildInputError(f"{name} must hold at least one example, got shape {src.shape}.")
        src.check_finite(name)
    if x2 is not None and x1.shape[1:] != x2.shape[1:]:
        raise BuildInputError(
            f"x1 and x2 must have the same feature shape, got {x1.shape[1:]} and {x2.shape[1:]} "
            f"(x1 {x1.shape}, x2 {x2.shape})."
        )


def _plan_layout(
    f, params, kwargs, x1: Source, x2: Source | None, kinds, trace_axes, diagonal_axes,
    block_size, devices: int,
) -> dict:  # fmt: skip
    example = jax.ShapeDtypeStruct((1, *x1.shape[1:]), x1.dtype)
    try:
        out = jax.eval_shape(lambda x: f(params, x, **kwargs), example)
    except Exception as e:
        raise BuildInputError(
            f"Calling f(params, x) on one example of shape {example.shape} failed: {e}"
        ) from e
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise BuildInputError(
            "build_kernel needs f to return a single array, got a pytree "
            f"{jax.tree.structure(out)}; build each output separately."
        )
    diagonal, dims = output_axes(out.ndim, trace_axes, diagonal_axes)
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    if diagonal and n1 != n2:
        raise BuildInputError(
            f"diagonal_axes includes the batch axis, which needs as many x1 as x2 examples; "
            f"got {n1} and {n2}."
        )
    per_example = math.prod(out.shape[1:]) or 1
    n_params = sum(np.size(p) for p in jax.tree.leaves(params))
    itemsize = np.dtype(out.dtype).itemsize
    if block_size is None:
        entry = len(kinds) * itemsize * max(1, per_example**2)
        block_size = default_block_size(n1, entry, devices, per_example * n_params * itemsize)
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
        raise BuildInputError(f"block_size must be a positive int, got {block_size!r} instead.")
    largest = -(-max(n1, n2) // devices) * devices
    if block_size > largest:  # one block holds everything: no padding beyond the data
        logger.info("block_size=%d is larger than the data; using %d.", block_size, largest)
        block_size = largest
    if block_size % devices:
        raise BuildInputError(
            f"block_size={block_size} must be a multiple of the {devices} devices per worker, "
            f"e.g. {max(devices, block_size // devices * devices)}."
        )
    return {
        "n1": n1,
        "n2": n2,
        "block": block_size,
        "symmetric": x2 is None and not diagonal,
        "diagonal": diagonal,
        "dims": dims,
    }


def build_kernel(
    f: Callable,
    params: Any,
    x1: Any,
    x2: Any = None,
    *,
    path: str,
    kinds: Sequence[str] = ("ntk",),
    trace_axes: int | Sequence[int] = (-1,),
    diagonal_axes: int | Sequence[int] = (),
    vmap_axes: Any = 0,
    implementation: Any = DEFAULT_NTK_IMPLEMENTATION,
    block_size: int | None = None,
    address: str | None = None,
    workers: int | None = None,
    worker_resources: Any = None,
    progress: bool = True,
    overwrite: bool = False,
    repair: bool = False,
    lease_wait: float | None = 0.0,
    **kwargs: Any,
) -> BuildResult:
    """Build an NTK/NNGP matrix block by block into a Zarr store.

    Args:
        f: the model, ``f(params, x, **kwargs)`` returning one array whose axis 0
            is the batch axis.
        params: its parameters (any pytree).
        x1: inputs ``(n1, *features)``: an array, a ``.npy`` path, a Zarr array,
            or a Zarr path/URL (``store::array`` for an array inside a group).
        x2: inputs ``(n2, *features)``, or None for the symmetric ``K(x1, x1)``
            (only blocks ``i <= j`` are computed; mirrors are transposes).
        path: the store (a local path or an fsspec URL).
        kinds: kernels to build, from ``('nngp', 'ntk')``.
        trace_axes, diagonal_axes, vmap_axes, implementation: as in
            :func:`bigntk.empirical_kernel_fn`. ``diagonal_axes=(0,)`` builds
            the per-example diagonal, row-blocked.
        block_size: rows and columns per block (default: from memory and cost).
        address: Ray address; None starts a local Ray (or uses the one running
            in this process).
        workers: number of worker actors (default: one per GPU, else one).
        worker_resources: what each worker asks Ray for: a mapping (or a
            ``WorkerResources``) of ``num_cpus``, ``num_gpus``, ``resources``
            (e.g. ``{"TPU": 4}``) and ``memory_fraction``; see ``bigntk.build._resources``.
        progress: show a progress bar on a terminal.
        overwrite: replace a store made by a different spec instead of refusing.
        repair: first reread every committed block and recompute those whose chunks
            are missing, unreadable, differ from their checksum or hold NaN/inf.
        lease_wait: seconds to wait while another driver holds the store's writer
            lease (None: as long as it takes); 0 refuses at once, naming the holder.
        **kwargs: passed to ``f``.

    Returns:
        A :class:`BuildResult`; read the kernel with :func:`bigntk.open_kernel`.
        Each stored kind has shape ``(n1, n2, *out)`` (diagonal builds
        ``(n1, *out)``), ``*out`` following the output-axis convention.
    """
    import ray

    check_arguments(path, kinds, implementation, lease_wait)
    path = os.fspath(path)
    kinds = canonical_kinds(kinds)
    check_store_url(str(path))
    get_implementation(implementation)
    s1 = as_source(x1, "x1")
    s2 = None if x2 is None else as_source(x2, "x2")
    _validate_sources(s1, s2)
    check_source_dtypes(s1, s2)
    owned, ray_start_s = False, 0.0
    try:
        owned, ray_start_s = _start_ray(address)
        placement = WorkerResources.coerce(worker_resources).placement(
            ray.cluster_resources(), workers
        )
        workers, devices = placement.workers, placement.devices
        layout = _plan_layout(
            f, params, kwargs, s1, s2, kinds, trace_axes, diagonal_axes, block_size, devices
        )
        settings = {
            "kinds": kinds,
            "trace_axes": trace_axes,
            "diagonal_axes": diagonal_axes,
            "vmap_axes": vmap_axes,
            "implementation": implementation,
            "block": layout["block"],
            "diagonal": layout["diagonal"],
        }
        try:
            kernel_probe = jax.eval_shape(
                lambda a, b: _probe(f, params, kwargs, settings, a, b),
                jax.ShapeDtypeStruct((layout["block"], *s1.shape[1:]), s1.dtype),
                jax.ShapeDtypeStruct((layout["block"], *s1.shape[1:]), s1.dtype),
            )
        except BigNTKError:
            raise
        except (TypeError, ValueError) as e:  # vmap_axes, dtypes jacrev refuses, ...
            raise BuildInputError(f"The kernel settings do not fit f: {e}") from e
        first = kernel_probe[kinds[0]]
        lead = 1 if layout["diagonal"] else 2
        layout["out_shape"] = list(first.shape[lead:])
        layout["dtype"] = str(first.dtype)
        spec = {
            "kinds": list(kinds),
            "trace_axes": repr(trace_axes),
            "diagonal_axes": repr(diagonal_axes),
            "vmap_axes": repr(vmap_axes),
            "implementation": _impl_int(implementation),
            "layout": layout,
            "model": fingerprint_model(f, params, kwargs),
            "x1": s1.fingerprint(),
            "x2": None if s2 is None else s2.fingerprint(),
        }
        with store_full_errors(path), writer_lease(path, lease_wait) as lease:  # one writer
            store, resumed = KernelStore.create_or_resume(
                path, spec, overwrite=overwrite, versions=_versions()
            )
            lease.hold(store)
            if repair and resumed:
                repair_store(store)
            return _run(store, (f, params, kwargs), settings, s1, s2, workers, devices, placement,
                        progress, ray_start_s)  # fmt: skip
    finally:
        if owned:
            ray.shutdown()


def _impl_int(implementation: Any) -> int:
    from bigntk.empirical._implementation import NtkImplementation

    if isinstance(implementation, str):
        return int(NtkImplementation[implementation.upper()])
    return int(NtkImplementation(implementation))


def _probe(f, params, kwargs, settings, a, b):
    from bigntk.empirical import empirical_kernel_fn

    kernel_fn = empirical_kernel_fn(
        f,
        settings["trace_axes"],
        settings["diagonal_axes"],
        settings["vmap_axes"],
        settings["implementation"],
    )
    return kernel_fn(a, b, settings["kinds"], params, **kwargs)._asdict()


def _worker_env() -> dict[str, str]:
    """Environment of worker processes: the driver's x64 setting, huge pages for malloc."""
    env = {"JAX_ENABLE_X64": "1" if jax.config.jax_enable_x64 else "0"}
    # Jacobian-heavy blocks page-fault less with huge pages (~30% faster on CPU)
    env["GLIBC_TUNABLES"] = os.environ.get("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    return env


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("bigntk", "jax", "jaxlib", "zarr", "ray", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:  # pragma: no cover
            out[name] = None
    return out


def _run(store, model, settings, s1, s2, workers, devices, placement, progress, ray_start_s):
    import ray
    from tqdm.auto import tqdm

    plan = store.plan
    done = store.committed()
    pending = deque(map(tuple, plan.pending(done)))
    skipped = plan.num_blocks - len(pending)
    start = time.perf_counter()
    show = progress and sys.stderr.isatty()
    bar = tqdm(total=plan.num_blocks, initial=skipped, unit="block", disable=not show,
               desc="bigntk build", dynamic_ncols=True)  # fmt: skip
    computed = entries = 0
    workers_start_s = 0.0
    if pending:
        sources = [s.for_workers() if isinstance(s, MemorySource) else s for s in (s1, s2)]
        model_ref = ray.put(model)
        actor_cls = ray.remote(BlockWorker).options(
            **placement.options,
            runtime_env={"env_vars": {**_worker_env(), **placement.env,
                                      **forwarded_env([store.path, *source_urls(s1, s2)])}},
        )  # fmt: skip

        def new_actor():
            return actor_cls.remote([model_ref], settings, store.path, sources[0], sources[1])

        actors, infos = start_workers(new_actor, min(workers, len(pending)))  # all ready
        workers_start_s = time.perf_counter() - start
        computed, entries = _schedule(store, plan, done, pending, actors, new_actor, bar, skipped)
        store.update_meta(
            timings={
                "last_run_s": time.perf_counter() - start,
                "workers_start_s": workers_start_s,
                "workers": infos,
                "device_kinds": sorted({str(i.get("device_kind")) for i in infos}),
                "placement": placement.summary(),
            }
        )
        for actor in actors:
            ray.kill(actor)
    bar.close()
    result = BuildResult(
        path=store.path,
        total=plan.num_blocks,
        computed=computed,
        skipped=skipped,
        wall_s=time.perf_counter() - start,
        ray_start_s=ray_start_s,
        workers_start_s=workers_start_s,
        entries=entries,
    )
    (tqdm.write if show else logger.info)(result.summary())
    return result


def _entries(plan, block: tuple[int, int]) -> int:
    """Kernel entries a block fills (its mirror included)."""
    (r0, r1), (c0, c1) = plan.rows(block[0]), plan.cols(block[1])
    if plan.diagonal:
        return r1 - r0
    mirrored = plan.symmetric and block[0] != block[1]
    return (r1 - r0) * (c1 - c0) * (2 if mirrored else 1)


def _schedule(store, plan, done, pending, actors, new_actor, bar, skipped) -> tuple[int, int]:
    """Run the pending blocks on ``actors``, replacing dead ones with ``new_actor()``."""
    import ray

    in_flight: dict[Any, tuple[tuple[int, int], int, Any, int]] = {}
    load = [0] * len(actors)
    tries: dict[tuple[int, int], int] = {}
    to_commit: list[tuple[int, int]] = []
    last_commit = time.perf_counter()
    computed = entries = 0
    limit = 2 * len(actors)
    while pending or in_flight:
        while pending and len(in_flight) < limit:
            block = pending.popleft()
            a = int(np.argmin(load))
            ref = actors[a].compute.remote(*map(int, block))
            in_flight[ref] = (block, a, actors[a], tries.get(block, 0))
            load[a] += 1
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
        for ref in ready:
            block, a, handle, attempt = in_flight.pop(ref)
            load[a] -= 1
            try:
                stats = ray.get(ref)
            except ray.exceptions.RayActorError:
                logger.warning("A worker died while computing block %s; recomputing it.", block)
                pending.appendleft(block)
                if actors[a] is handle:  # first of its failed tasks: replace the actor
                    ray.kill(handle)
                    actors[a] = new_actor()
                continue
            except ray.exceptions.RayTaskError as e:
                if attempt >= _MAX_RETRIES:
                    store.commit(np.array(to_commit).reshape(-1, 2), done)
                    raise BlockFailedError(
                        f"Block {tuple(map(int, block))} failed {attempt + 1} times; the "
                        f"{int(done.sum())} committed blocks are kept in {store.path}. Last "
                        f"error: {error_summary(e)}"
                    ) from e
                tries[block] = attempt + 1
                pending.append(block)
                continue
            done[block] = True
            store.checksums.record(block, stats.get("checksums"))
            to_commit.append(block)
            computed += 1
            entries += _entries(plan, block)
            bar.update(1)
        if to_commit and (time.perf_counter() - last_commit > _COMMIT_EVERY_S or not in_flight):
            store.commit(np.array(to_commit), done)
            to_commit.clear()
            last_commit = time.perf_counter()
            rate = entries / max(bar.format_dict["elapsed"], 1e-9)
            bar.set_postfix_str(f"{rate:,.0f} entries/s, {skipped} resumed")
    return computed, entries
