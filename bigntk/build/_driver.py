"""``build_kernel``: check the arguments, plan the blocks, open the store, run what is missing.

The driver checks the model and data, plans the layout, writes the build spec
into a new store or checks it against an existing one (under the store's writer
lease), and hands the blocks the manifest does not list to
:func:`~bigntk.build._scheduler.run_blocks`. The same call resumes an
interrupted build.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from bigntk.build._checks import check_arguments, check_source_dtypes
from bigntk.build._checksum import repair as repair_store
from bigntk.build._compute import kernel_shapes
from bigntk.build._data import Source, as_source
from bigntk.build._failures import store_full_errors
from bigntk.build._fs import check_store_url
from bigntk.build._lease import writer_lease
from bigntk.build._resources import WorkerResources
from bigntk.build._scheduler import BuildResult, run_blocks
from bigntk.build._spec import (
    canonical_kinds,
    default_block_size,
    fingerprint_model,
    output_axes,
)
from bigntk.build._store import KernelStore
from bigntk.empirical._implementation import DEFAULT_NTK_IMPLEMENTATION, as_implementation
from bigntk.errors import BigNTKError, BuildInputError

logger = logging.getLogger(__name__)


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
            x = jax.ShapeDtypeStruct((layout["block"], *s1.shape[1:]), s1.dtype)
            kernel_probe = kernel_shapes(f, params, kwargs, kinds, trace_axes, diagonal_axes,
                                         vmap_axes, implementation, x, x)  # fmt: skip
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
            "implementation": int(as_implementation(implementation)),
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
            return run_blocks(store, (f, params, kwargs), settings, s1, s2, workers, placement,
                              progress, ray_start_s)  # fmt: skip
    finally:
        if owned:
            ray.shutdown()


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("bigntk", "jax", "jaxlib", "zarr", "ray", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:  # pragma: no cover
            out[name] = None
    return out
