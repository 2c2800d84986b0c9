"""What identifies a build: settings, layout and fingerprints of the computation and data.

Two runs with the same spec compute the same values, so the second resumes the
first's store; two runs whose values could differ have different specs. The
spec is canonical: equal computations spelled differently (``trace_axes=-1``,
``[-1]`` or ``(1,)`` for outputs of rank 2; ``kinds`` in any order) are one
spec. The model enters through :mod:`bigntk.build._identity` (its program and
parameter values), the data through a hash of every row
(:meth:`bigntk.build._data.Source.scan`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from bigntk.empirical import (
    NtkImplementation,
    as_implementation,
    axes_spec,
    empirical_kernel_fn,
)
from bigntk.errors import BuildInputError

KINDS = ("nngp", "ntk")
logger = logging.getLogger(__name__)

SPEC_VERSION = 2  # 1: model fingerprint by name and bytecode, data by 64 sampled rows


def canonical_vmap_axes(vmap_axes: Any) -> str:
    """A stable text of resolved batch axes (NT's forms: an int, a pytree, a 3-tuple)."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): plain(v[k]) for k in sorted(v, key=str)}
        if isinstance(v, list | tuple):
            return [plain(e) for e in v]
        if isinstance(v, np.integer):
            return int(v)
        return v

    if isinstance(vmap_axes, tuple) and len(vmap_axes) == 3:
        in_axes, out_axes, kw = vmap_axes
    else:
        in_axes = out_axes = vmap_axes
        kw = {}
    return repr(plain([in_axes, out_axes, kw or {}]))


def canonical_kinds(kinds: Any) -> tuple[str, ...]:
    """``kinds`` as a tuple in the order of :data:`KINDS` (the order given changes nothing)."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds or len(set(kinds)) != len(kinds):
        raise BuildInputError(
            f"kinds must be a non-empty selection of {KINDS} without repeats, got {kinds!r} "
            "instead; e.g. kinds=('ntk',) or kinds=('nngp', 'ntk')."
        )
    return tuple(k for k in KINDS if k in kinds)


def output_axes(out_ndim: int, trace_axes: Any, diagonal_axes: Any) -> Any:
    """The canonical axes (an ``AxesSpec``: sorted, non-negative) for outputs of ``out_ndim``.

    Raises :class:`BuildInputError` for axes that do not fit, or a traced batch axis.
    """
    try:
        spec = axes_spec(out_ndim, trace_axes, diagonal_axes)
    except (TypeError, ValueError) as e:
        raise BuildInputError(str(e)) from None
    if out_ndim == 0 or 0 in spec.trace:
        raise BuildInputError(
            "A kernel build needs outputs with a batch axis (axis 0) that is not traced: "
            f"got trace_axes={trace_axes!r} for outputs of rank {out_ndim}. Remove 0 from "
            "trace_axes (a traced batch axis averages the whole kernel into one number)."
        )
    return spec


def dim_names(spec: Any) -> list[str]:
    """The stored arrays' dimension names for canonical axes ``spec``."""
    dims = []
    for k, side in spec.result_labels():
        if k == 0:
            dims.append("x" if side == 0 else f"x{side}")
        else:
            dims.append(f"out{k}" if side == 0 else f"out{k}_{side}")
    return dims


#: Assumed sustained FLOP/s of one device, by platform, for sizing blocks (not measured
#: here: 2 CPU cores ran the SD block program of a 784-512-512-10 FCN at ~75 GFLOP/s).
DEVICE_FLOPS = {"cpu": 5e10, "gpu": 2e13, "tpu": 5e13}
#: A block should take at least this long, so that the driver's ~3-10 ms per block
#: (Ray round trip, manifest commit) stays under 1% of the build. Blocks that the chunk cap
#: keeps shorter (a cheap kernel on a fast device) are sent several to a task by the
#: scheduler (``bigntk.build._scheduler._TASK_SECONDS``), timed on the workers.
BLOCK_SECONDS = 1.0
#: Bytes of one stored chunk (a block of one kind): Dask reads best at ~10-250 MB.
MIN_CHUNK_BYTES = 16 * 2**20
MAX_CHUNK_BYTES = 256 * 2**20
_NO_BUDGET = float(2**62)  # lowering for a FLOP count only: never chunk
_AUTO_CANDIDATES = (
    NtkImplementation.JACOBIAN_CONTRACTION,
    NtkImplementation.NTK_VECTOR_PRODUCTS,
    NtkImplementation.STRUCTURED_DERIVATIVES,
)
_ROUND = 256  # rows: block sizes are multiples of this (and of the devices per worker)


def default_block_size(
    n: int, entry_bytes: int, devices: int, platform: str = "cpu",
    flops_per_entry: float = 0.0, flops_per_row: float = 0.0, diagonal: bool = False,
) -> int:  # fmt: skip
    """The rows per block of a build given ``block_size=None``: the one place this is decided.

    The rule, for a worker of ``devices`` devices of ``platform``:

    1. **time**: the smallest block whose FLOPs (``flops_per_entry`` per kernel
       entry + ``flops_per_row`` per row of x1 or x2, from XLA's count of the block
       program that will run, see :func:`block_flops`) take :data:`BLOCK_SECONDS`
       at ``devices ×`` :data:`DEVICE_FLOPS` ``[platform]``;
    2. **reading**: no smaller than a chunk of :data:`MIN_CHUNK_BYTES` per kind
       (``entry_bytes``: stored bytes of one kernel entry of one kind), even where
       a smaller block would take a second;
    3. **memory**: no larger than a chunk of :data:`MAX_CHUNK_BYTES`; the compute
       itself needs no bound here, since each worker's kernel function cuts one call
       into chunks that fit its device's memory budget (``kernel_fn.plan``);
    4. a multiple of 256 rows and of ``devices``, and no larger than ``n`` needs.

    The driver's memory plays no part: blocks never pass through it. With a
    float32 kernel of one entry per pair, (2) and (3) bound blocks to 2048-8192
    rows; a cheap kernel on a fast accelerator stops at (3) below one second.
    Diagonal builds (``diagonal=True``) have ``rows`` entries per block, not ``rows²``.
    """
    power = 1 if diagonal else 2
    step = math.lcm(_ROUND, max(1, devices))
    rate = DEVICE_FLOPS.get(platform, DEVICE_FLOPS["gpu"]) * max(1, devices)
    work = BLOCK_SECONDS * rate
    if diagonal:
        a, c = 0.0, flops_per_entry + flops_per_row
    else:
        a, c = flops_per_entry, flops_per_row
    if a > 0:  # a b² + c b = work
        by_time = (-c + math.sqrt(c * c + 4 * a * work)) / (2 * a)
    else:
        by_time = work / c if c > 0 else 0.0
    floor = (MIN_CHUNK_BYTES / max(1, entry_bytes)) ** (1 / power)
    cap = (MAX_CHUNK_BYTES / max(1, entry_bytes)) ** (1 / power)
    rows = min(max(by_time, floor), cap)
    block = max(step, math.ceil(rows / step) * step)
    if block > cap:
        block = max(step, math.floor(cap / step) * step)
    largest = -(-n // max(1, devices)) * max(1, devices)
    return max(1, min(block, largest))


def block_size_for(
    kernel: tuple, axes: Any, x: Any, out: Any, n: int, devices: int, platform: str | None,
    diagonal: bool,
) -> int:  # fmt: skip
    """:func:`default_block_size` for a build: its inputs read from the kernel and data.

    ``kernel`` is ``(f, params, kwargs, kinds, vmap_axes, implementation)``; ``axes``
    the canonical output axes; ``x`` the x1 source (feature shape, dtype); ``out``
    f's output for one example (a ``ShapeDtypeStruct``); ``n`` the larger side;
    ``platform`` the workers' (:func:`worker_platform`; None: this process's device).
    """
    f, params, kwargs, kinds, vmap_axes, implementation = kernel
    platform = platform or jax.devices()[0].platform
    stored = math.prod(
        d ** (1 if k in axes.diagonal else 2)
        for k, d in enumerate(out.shape)
        if k and k not in axes.trace
    )
    cost = kernel_flops(
        f, params, kwargs, kinds, axes.trace, axes.diagonal, vmap_axes, implementation,
        tuple(x.shape[1:]), x.dtype,
    )  # fmt: skip
    entry = stored * np.dtype(out.dtype).itemsize
    block = default_block_size(n, entry, devices, platform, *(cost or (0.0, 0.0)), diagonal)
    logger.info(
        "block_size=None: %d rows (%s, %d device(s) per worker; %s FLOPs per entry, %s per "
        "row; %d bytes per stored entry)", block, platform, devices,
        *(f"{c:.3g}" for c in (cost or (float("nan"),) * 2)), entry,
    )  # fmt: skip
    return block


def worker_platform(options: dict) -> str:
    """``'gpu'``, ``'tpu'`` or ``'cpu'``: the devices a worker with Ray ``options`` gets."""
    if options.get("num_gpus"):
        return "gpu"
    if (options.get("resources") or {}).get("TPU"):
        return "tpu"
    return "cpu"


def kernel_flops(
    f, params, kwargs, kinds, trace_axes, diagonal_axes, vmap_axes, implementation,
    feature_shape: tuple[int, ...], dtype: Any,
) -> tuple[float, float] | None:  # fmt: skip
    """:func:`block_flops` of the kernel program a worker runs (AUTO: the cheapest candidate).

    Lowered only, never compiled or run, and without a memory budget: chunking a call
    (what the workers' kernel functions do to fit their memory) barely changes its FLOPs.
    """
    impl = as_implementation(implementation)
    candidates = [impl] if impl != NtkImplementation.AUTO else list(_AUTO_CANDIDATES)
    best = None
    for which in candidates:
        kernel_fn = empirical_kernel_fn(
            f, trace_axes, diagonal_axes, vmap_axes, which, memory_budget=_NO_BUDGET
        )
        call = jax.jit(lambda a, b, p, fn=kernel_fn: fn(a, b, tuple(kinds), p, **kwargs))

        def lower(rows: int, call=call) -> Any:
            x = jax.ShapeDtypeStruct((rows, *feature_shape), dtype)
            return call.lower(x, x, params).cost_analysis()

        cost = block_flops(lower)
        if cost is not None and (best is None or _at(cost, 2048) < _at(best, 2048)):
            best = cost
    return best


def _at(cost: tuple[float, float], rows: int) -> float:
    return cost[0] * rows * rows + cost[1] * rows


def block_flops(kernel: Callable[[int], Any]) -> tuple[float, float] | None:
    """``(flops_per_entry, flops_per_row)`` of a block program, from XLA's FLOP counts.

    ``kernel(rows)`` lowers the program of a block of ``rows`` (without compiling
    or running it) and returns XLA's cost analysis; two sizes separate the
    per-entry (pairs) from the per-row (derivatives of each example) work.
    None where XLA gives no count.
    """
    small, large = 128, 256
    try:
        f_small, f_large = (_flops(kernel(rows)) for rows in (small, large))
    except Exception as e:  # noqa: BLE001 - sizing is advice: a model that cannot lower here
        logger.debug("block_flops: lowering the block program failed (%r)", e)
        return None
    if not f_small or not f_large:
        return None
    per_entry = max(0.0, (f_large - 2 * f_small) / (large * large - 2 * small * small))
    per_row = max(0.0, (f_small - per_entry * small * small) / small)
    return per_entry, per_row


def _flops(analysis: Any) -> float | None:
    if isinstance(analysis, list | tuple):  # older jax: one dict per program
        analysis = analysis[0] if analysis else {}
    flops = (analysis or {}).get("flops")
    return float(flops) if flops and flops > 0 else None
