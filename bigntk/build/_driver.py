"""``build_kernel``: check the arguments, describe the build, open the store, run what is missing.

The driver checks the arguments and data, describes the build once
(:func:`~bigntk.build._describe.describe_build`: layout, kernel settings,
spec), writes the spec into a new store or checks it against an existing one
(under the store's writer lease), and hands the blocks the manifest does not
list to :func:`~bigntk.build._scheduler.run_blocks`. The same call resumes an
interrupted build.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from bigntk._ray import start_ray
from bigntk.build._checks import check_arguments, check_source_dtypes
from bigntk.build._data import Source, as_source
from bigntk.build._describe import describe_build
from bigntk.build._failures import store_full_errors
from bigntk.build._resources import WorkerResources
from bigntk.build._result import BuildResult
from bigntk.build._scheduler import run_blocks
from bigntk.build._spec import canonical_kinds, worker_platform
from bigntk.empirical import DEFAULT_NTK_IMPLEMENTATION
from bigntk.errors import BigNTKError, BuildInputError
from bigntk.store import (
    KernelStore,
    StoreWriter,
    check_not_foreign,
    has_partial_files,
    protocol,
    spec_hash,
    why_not_resumable,
    writer_lease,
)
from bigntk.store import repair as repair_store

logger = logging.getLogger(__name__)


def check_store_url(path: str) -> None:
    """Refuse a store that Ray workers (other processes) could not write to."""
    if protocol(path) == "memory":
        raise BuildInputError(
            f"path={path!r}: a memory:// store lives inside one process, and the workers are "
            "separate Ray processes that would write to their own copies. Use a local or shared "
            "path, or an object store URL such as s3://bucket/kernels/k.zarr."
        )


def _validate_sources(x1: Source, x2: Source | None) -> None:
    for name, src in (("x1", x1), ("x2", x2)):
        if src is None:
            continue
        if len(src.shape) < 1 or src.shape[0] == 0:
            raise BuildInputError(f"{name} must hold at least one example, got shape {src.shape}.")
    if x2 is not None and x1.shape[1:] != x2.shape[1:]:
        raise BuildInputError(
            f"x1 and x2 must have the same feature shape, got {x1.shape[1:]} and {x2.shape[1:]} "
            f"(x1 {x1.shape}, x2 {x2.shape})."
        )


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
    vmap_axes: Any = None,
    implementation: Any = DEFAULT_NTK_IMPLEMENTATION,
    block_size: int | None = None,
    address: str | None = None,
    workers: int | None = None,
    worker_resources: Any = None,
    progress: bool = True,
    overwrite: bool = False,
    repair: bool = False,
    lease_wait: float | None = 0.0,
    data_fingerprint: str = "full",
    max_worker_deaths: int = 3,
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
            (only blocks ``i <= j`` are computed and stored; readers see the
            lower blocks as their transposes).
        path: the store (a local path or an fsspec URL).
        kinds: kernels to build, from ``('nngp', 'ntk')``.
        trace_axes, diagonal_axes, vmap_axes, implementation: as in
            :func:`bigntk.empirical_kernel_fn`. ``diagonal_axes=(0,)`` builds
            the per-example diagonal, row-blocked. ``vmap_axes=None`` (the
            default) proves that ``f`` treats examples independently, and
            refuses a build it cannot prove it for (a kernel of a model that
            mixes examples has no blocks); ``vmap_axes=0`` asserts it.
        block_size: rows and columns per block (default: ~1 s of work, 16-256 MiB chunks).
        address: Ray address; None starts a local Ray (or uses the one running
            in this process).
        workers: number of worker actors (default: one per GPU, else one).
        worker_resources: what each worker asks Ray for: a mapping (or a
            ``WorkerResources``) of ``num_cpus``, ``num_gpus``, ``resources``
            (e.g. ``{"TPU": 4}``) and ``memory_fraction``; see ``bigntk.build._resources``.
        progress: show a progress bar on a terminal.
        overwrite: replace a bigntk store made by a different spec instead of
            refusing (a path holding anything else is never touched).
        repair: first reread every committed block and recompute those whose chunks
            are missing, unreadable, differ from their checksum or hold NaN/inf.
        lease_wait: seconds to wait while another driver holds the store's writer
            lease (None: as long as it takes); 0 refuses at once, naming the holder.
        data_fingerprint: ``'full'`` hashes every input row (read once per run,
            with the finiteness check); ``'sample'`` hashes 64 rows, for inputs
            too large to reread at every resume (an edit elsewhere goes unseen).
        max_worker_deaths: a block whose worker process dies this many times
            (killed, out of memory, crashed) stops the build with
            :class:`~bigntk.errors.BlockFailedError`; committed blocks are kept.
        **kwargs: passed to ``f``.

    Returns:
        A :class:`BuildResult`; read the kernel with :func:`bigntk.open_kernel`.
        Each stored kind has shape ``(n1, n2, *out)`` (diagonal builds
        ``(n1, *out)``), ``*out`` following the output-axis convention.
    """
    import ray

    check_arguments(path, kinds, implementation, lease_wait, max_worker_deaths)
    path = os.fspath(path)
    kinds = canonical_kinds(kinds)
    check_store_url(str(path))
    check_not_foreign(str(path))
    s1, s2, data = _open_inputs(x1, x2, data_fingerprint)
    existing = None if overwrite else _existing_store(path)
    model = (f, params, kwargs)
    describe = functools.partial(
        describe_build, model, s1, s2, data, kinds=kinds, trace_axes=trace_axes,
        diagonal_axes=diagonal_axes, vmap_axes=vmap_axes, implementation=implementation,
        block_size=block_size, stored_block=None if existing is None else existing.plan.block,
    )  # fmt: skip
    if existing is not None and not repair:
        result = _answer_complete(existing, describe)
        if result is not None:
            return result
    owned, ray_start_s = False, 0.0
    try:
        owned, ray_start_s = start_ray(address)
        placement = WorkerResources.coerce(worker_resources).placement(
            ray.cluster_resources(), workers
        )
        platform = worker_platform(placement.options)
        spec, settings, probe = describe(devices=placement.devices, platform=platform)
        with store_full_errors(path), writer_lease(path, lease_wait) as lease:  # one writer
            store = _open_for_writing(path, spec, probe, lease, overwrite=overwrite, repair=repair)
            return run_blocks(store, model, settings, (s1, s2), placement, progress=progress,
                              ray_start_s=ray_start_s, max_deaths=max_worker_deaths)  # fmt: skip
    finally:
        if owned:
            ray.shutdown()


def _open_inputs(x1: Any, x2: Any, data_fingerprint: str) -> tuple[Source, Source | None, tuple]:
    """``(x1, x2, fingerprints)``: the inputs as checked sources, and their fingerprints."""
    s1 = as_source(x1, "x1")
    s2 = None if x2 is None else as_source(x2, "x2")
    _validate_sources(s1, s2)
    check_source_dtypes(s1, s2)
    data = (
        s1.scan("x1", data_fingerprint),
        None if s2 is None else s2.scan("x2", data_fingerprint),
    )
    return s1, s2, data


def _open_for_writing(
    path: str, spec: dict, probe: dict, lease: Any, *, overwrite: bool, repair: bool
) -> StoreWriter:
    """The store at ``path`` for this spec, new or resumed (repaired if asked), under ``lease``."""
    store, resumed = StoreWriter.create_or_resume(
        path, spec, overwrite=overwrite, versions=_versions(), probe=probe
    )
    lease.hold(store)
    if repair and resumed:
        repair_store(store)
    return store


def _existing_store(path: str) -> KernelStore | None:
    """The bigntk store at ``path``, opened for reading, or None."""
    try:
        return KernelStore.open(path)
    except (FileNotFoundError, BigNTKError):
        return None


def _answer_complete(store: KernelStore, describe: Callable) -> BuildResult | None:
    """A complete store of this very computation answers without Ray; else None.

    The same spec, the same JAX versions and an agreeing probe; anything else
    (a JAX upgrade to record, a refusal to explain) takes the usual path.
    """
    start = time.perf_counter()
    plan = store.plan
    if (plan.mask() & ~store.committed()).any() or has_partial_files(store.path):
        return None  # blocks to compute, or orphan files to remove under the lease
    spec, _, probe = describe(devices=1)  # one device: the layout checks need no Ray
    if spec_hash(spec) != store.spec_hash or why_not_resumable(
        store, spec, store.spec_hash, store.meta.get("versions", {}), probe
    ):
        return None
    versions = _versions()
    if any(store.meta.get("versions", {}).get(k) != versions[k] for k in ("jax", "jaxlib")):
        return None
    result = BuildResult(store.path, plan.num_blocks, 0, plan.num_blocks,
                         time.perf_counter() - start, 0.0, 0.0, 0)  # fmt: skip
    logger.info("%s (complete: answered from its manifest, without Ray)", result.summary())
    return result


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("bigntk", "jax", "jaxlib", "zarr", "ray", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:  # pragma: no cover
            out[name] = None
    return out
