"""``build_kernel``: check the arguments, plan the blocks, open the store, run what is missing.

The driver checks the model and data, plans the layout, writes the build spec
into a new store or checks it against an existing one (under the store's writer
lease), and hands the blocks the manifest does not list to
:func:`~bigntk.build._scheduler.run_blocks`. The same call resumes an
interrupted build.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax

from bigntk.build._checks import check_arguments, check_source_dtypes
from bigntk.build._compute import kernel_probe, kernel_shapes
from bigntk.build._data import Source, as_source
from bigntk.build._failures import store_full_errors
from bigntk.build._identity import params_fingerprint, probe_rows, program_fingerprint
from bigntk.build._resources import WorkerResources
from bigntk.build._scheduler import BuildResult, run_blocks
from bigntk.build._spec import (
    SPEC_VERSION,
    block_size_for,
    canonical_kinds,
    canonical_vmap_axes,
    dim_names,
    output_axes,
    worker_platform,
)
from bigntk.empirical import (
    DEFAULT_NTK_IMPLEMENTATION,
    as_implementation,
    why_not_batch_independent,
)
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
    if x2 is not None and x1.shape[1:] != x2.shape[1:]:
        raise BuildInputError(
            f"x1 and x2 must have the same feature shape, got {x1.shape[1:]} and {x2.shape[1:]} "
            f"(x1 {x1.shape}, x2 {x2.shape})."
        )


def plan_layout(
    f, params, kwargs, x1: Source, x2: Source | None, kinds, trace_axes, diagonal_axes,
    block_size, devices: int, *, vmap_axes: Any = None,
    implementation: Any = DEFAULT_NTK_IMPLEMENTATION, platform: str | None = None,
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
    axes = output_axes(out.ndim, trace_axes, diagonal_axes)
    diagonal = 0 in axes.diagonal
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    if diagonal and n1 != n2:
        raise BuildInputError(
            f"diagonal_axes includes the batch axis, which needs as many x1 as x2 examples; "
            f"got {n1} and {n2}."
        )
    if block_size is None:  # the rule: bigntk.build._spec.default_block_size
        block_size = block_size_for((f, params, kwargs, kinds, vmap_axes, implementation), axes,
                                    x1, out, max(n1, n2), devices, platform, diagonal)  # fmt: skip
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
        "dims": dim_names(axes),
        "trace_axes": list(axes.trace),
        "diagonal_axes": list(axes.diagonal),
    }


def resolve_vmap_axes(f, params, kwargs, x1: Source, x2: Source | None, vmap_axes: Any) -> Any:
    """``vmap_axes``, or for None the batch axis 0 once proved; else :class:`BuildInputError`.

    A block is a block of the kernel only if each output row depends on its own
    input row alone: a model that mixes examples (batch statistics, attention
    across the batch) gives blocks that belong to no kernel. ``None`` asks for
    the proof ``empirical_kernel_fn`` makes (on two rows of each input).
    """
    if vmap_axes is not None:
        return vmap_axes
    rows = [x1.read(0, min(2, len(x1)))]
    if x2 is not None:
        rows.append(x2.read(0, min(2, len(x2))))
    if all(len(r) == 1 for r in rows):
        return 0  # one example: every block is the whole kernel
    g = lambda p, x: f(p, x, **kwargs)  # noqa: E731 - kwargs are the same for every block
    reason = why_not_batch_independent(g, rows[0], rows[-1], params, {}, {})
    if reason is None:
        return 0
    raise BuildInputError(
        "A kernel built block by block needs f to treat examples independently (output "
        "row i a function of input row i only), and bigntk could not prove that of this f "
        f"({reason}). A model that mixes examples (batch statistics, attention across the "
        "batch) has no block-built kernel: compute it in one call with empirical_kernel_fn. "
        "If f does treat examples independently, say so with vmap_axes=0 (config: "
        "kernel.vmap_axes: 0)."
    )


def describe_build(
    f, params, kwargs, s1: Source, s2: Source | None, kinds, trace_axes, diagonal_axes,
    vmap_axes, implementation, block_size, devices: int, data: tuple[str, str | None],
    platform: str | None = None,
) -> tuple[dict, dict, dict]:  # fmt: skip
    """``(spec, settings, probe)`` of a build: what identifies it, how workers compute it.

    ``spec`` is canonical (see :mod:`bigntk.build._spec`); ``settings`` are the
    keyword arguments of the workers' ``BlockKernel``; ``probe`` holds a few
    kernel entries of the first examples (see :mod:`bigntk.build._identity`).
    ``data`` are the inputs' fingerprints (:meth:`Source.scan`).
    """
    kinds = canonical_kinds(kinds)
    layout = plan_layout(
        f, params, kwargs, s1, s2, kinds, trace_axes, diagonal_axes, block_size, devices,
        vmap_axes=vmap_axes, implementation=implementation, platform=platform,
    )  # fmt: skip
    trace_axes = tuple(layout.pop("trace_axes"))
    diagonal_axes = tuple(layout.pop("diagonal_axes"))
    vmap_axes = resolve_vmap_axes(f, params, kwargs, s1, s2, vmap_axes)
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
        x = jax.ShapeDtypeStruct((layout["block"], *s1.shape[1:]), s1.dtype)
        shapes = kernel_shapes(f, params, kwargs, kinds, trace_axes, diagonal_axes,
                               vmap_axes, implementation, x, x)  # fmt: skip
        r1 = s1.read(0, probe_rows(len(s1)))
        r2 = None if layout["symmetric"] else (s2 or s1).read(0, probe_rows(len(s2 or s1)))
        probe = kernel_probe(f, params, kwargs, kinds, trace_axes, diagonal_axes, vmap_axes,
                             implementation, r1, r2)  # fmt: skip
        program = program_fingerprint(f, params, kwargs, s1.shape[1:], s1.dtype)
    except BigNTKError:
        raise
    except (TypeError, ValueError) as e:  # vmap_axes, dtypes jacrev refuses, ...
        raise BuildInputError(f"The kernel settings do not fit f: {e}") from e
    first = shapes[kinds[0]]
    lead = 1 if layout["diagonal"] else 2
    layout["out_shape"] = list(first.shape[lead:])
    layout["dtype"] = str(first.dtype)
    spec = {
        "spec_version": SPEC_VERSION,
        "kinds": list(kinds),
        "trace_axes": list(trace_axes),
        "diagonal_axes": list(diagonal_axes),
        "vmap_axes": canonical_vmap_axes(vmap_axes),
        "implementation": int(as_implementation(implementation)),
        "layout": layout,
        "model": {"program": program, "params": params_fingerprint(params)},
        "x1": data[0],
        "x2": data[1],
    }
    return spec, settings, {"dtype": layout["dtype"], "values": probe}


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
            (only blocks ``i <= j`` are computed; mirrors are transposes).
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
    s1 = as_source(x1, "x1")
    s2 = None if x2 is None else as_source(x2, "x2")
    _validate_sources(s1, s2)
    check_source_dtypes(s1, s2)
    data = (
        s1.scan("x1", data_fingerprint),
        None if s2 is None else s2.scan("x2", data_fingerprint),
    )
    existing = None if overwrite else _existing_store(path)
    if existing is not None:
        if block_size is None:  # the store's tiling, whatever this machine's default would be
            block_size = existing.plan.block
        if not repair:
            describe = functools.partial(
                describe_build, f, params, kwargs, s1, s2, kinds, trace_axes, diagonal_axes,
                vmap_axes, implementation, block_size,
            )  # fmt: skip
            result = _answer_complete(existing, describe, data)
            if result is not None:
                return result
    owned, ray_start_s = False, 0.0
    try:
        owned, ray_start_s = _start_ray(address)
        placement = WorkerResources.coerce(worker_resources).placement(
            ray.cluster_resources(), workers
        )
        workers, devices = placement.workers, placement.devices
        spec, settings, probe = describe_build(
            f, params, kwargs, s1, s2, kinds, trace_axes, diagonal_axes, vmap_axes,
            implementation, block_size, devices, data, worker_platform(placement.options),
        )  # fmt: skip
        with store_full_errors(path), writer_lease(path, lease_wait) as lease:  # one writer
            store, resumed = StoreWriter.create_or_resume(
                path, spec, overwrite=overwrite, versions=_versions(), probe=probe
            )
            lease.hold(store)
            if repair and resumed:
                repair_store(store)
            return run_blocks(store, (f, params, kwargs), settings, s1, s2, workers, placement,
                              progress, ray_start_s, max_worker_deaths)  # fmt: skip
    finally:
        if owned:
            ray.shutdown()


def _existing_store(path: str) -> KernelStore | None:
    """The bigntk store at ``path``, opened for reading, or None."""
    try:
        return KernelStore.open(path)
    except (FileNotFoundError, BigNTKError):
        return None


def _answer_complete(store: KernelStore, describe: Callable, data: tuple) -> BuildResult | None:
    """A complete store of this very computation answers without Ray; else None.

    The same spec, the same JAX versions and an agreeing probe; anything else
    (a JAX upgrade to record, a refusal to explain) takes the usual path.
    """
    start = time.perf_counter()
    plan = store.plan
    if (plan.mask() & ~store.committed()).any() or has_partial_files(store.path):
        return None  # blocks to compute, or orphan files to remove under the lease
    spec, _, probe = describe(1, data)  # one device: the layout checks need no Ray
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
