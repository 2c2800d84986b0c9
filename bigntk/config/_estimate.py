"""``bigntk plan``: what a build will cost, before it runs.

The estimate needs no Ray and writes nothing. It compiles the block program the
workers would run (the same :class:`BlockKernel`) and reads from it:

- the block count of the plan (symmetric builds count ``i <= j`` only);
- the bytes each kind takes on disk (uncompressed; kernels compress little): a
  symmetric kernel stores each pair of examples once (store format 3);
- the FLOPs of one block from XLA's cost analysis of the compiled program;
- the seconds one block takes here, timed on the first block of real data
  (after compiling), unless ``measure=False``;
- device-hours for all pending blocks: from the timing, or from the FLOPs and
  a device throughput the user gives for other hardware (``flops_per_s``).
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import numpy as np

from bigntk._text import format_bytes
from bigntk.build import BlockKernel, plan_layout, resolve_vmap_axes
from bigntk.config._load import BuildConfig
from bigntk.errors import BuildInputError
from bigntk.store import FORMAT_VERSION, Plan, stored_entries


@dataclasses.dataclass(frozen=True)
class Estimate:
    """The cost of one build (see the module docstring).

    Attributes:
        plan: the tiling.
        kind_shapes: stored shape of each kind.
        dtype: the kernel's dtype.
        bytes_per_kind: uncompressed bytes of each stored array.
        block_flops: XLA's FLOP count for one block (None if XLA gives none).
        block_s: seconds per block measured here (None if not measured).
        flops_per_s: device throughput used for ``block_s_for_device`` (None: not given).
        workers: workers the wall-time estimate assumes.
    """

    plan: Plan
    kind_shapes: dict[str, tuple[int, ...]]
    dtype: str
    bytes_per_kind: dict[str, int]
    block_flops: float | None
    block_s: float | None
    flops_per_s: float | None
    workers: int

    @property
    def block_s_for_device(self) -> float | None:
        """Seconds per block on a device of ``flops_per_s`` (None without both numbers)."""
        if self.flops_per_s is None or self.block_flops is None:
            return None
        return self.block_flops / self.flops_per_s

    @property
    def per_block_s(self) -> float | None:
        """The per-block time the totals use: the device's if given, else the measured one."""
        given = self.block_s_for_device
        return given if given is not None else self.block_s

    @property
    def device_hours(self) -> float | None:
        s = self.per_block_s
        return None if s is None else self.plan.num_blocks * s / 3600

    @property
    def wall_hours(self) -> float | None:
        hours = self.device_hours
        return None if hours is None else hours / self.workers

    def lines(self) -> list[str]:
        """The report ``bigntk plan`` prints."""
        p = self.plan
        shape = "diagonal" if p.diagonal else "symmetric" if p.symmetric else "rectangular"
        g1, g2 = p.grid
        out = [
            f"kernel: {p.n1} x {p.n2}, {shape}; block size {p.block}, grid {g1} x {g2}, "
            f"{p.num_blocks} blocks to compute",
        ]
        for kind, kshape in self.kind_shapes.items():
            out.append(
                f"  {kind}: shape {kshape} {self.dtype}, {format_bytes(self.bytes_per_kind[kind])} "
                "on disk (uncompressed)"
            )
        out.append(f"  total on disk: {format_bytes(sum(self.bytes_per_kind.values()))}")
        if self.block_flops is not None:
            out.append(f"per block: {self.block_flops:.3g} FLOPs (XLA cost analysis)")
        if self.block_s is not None:
            rate = f", {self.block_flops / self.block_s:.3g} FLOP/s" if self.block_flops else ""
            out.append(f"  measured here: {self.block_s:.3g} s per block{rate}")
        if self.block_s_for_device is not None:
            out.append(
                f"  at {self.flops_per_s:.3g} FLOP/s: {self.block_s_for_device:.3g} s per block"
            )
        if self.device_hours is None:
            out.append("total: unknown (no timing; pass --flops-per-s or drop --no-measure)")
        else:
            out.append(
                f"total: {self.device_hours:.3g} device-hours; "
                f"{self.wall_hours:.3g} h wall on {self.workers} worker(s)"
            )
        return out


def estimate(
    config: BuildConfig,
    *,
    workers: int | None = None,
    flops_per_s: float | None = None,
    measure: bool = True,
) -> Estimate:
    """The cost of building ``config``'s kernel (on one local device per worker)."""
    if workers is None:
        workers = config.workers or 1
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise BuildInputError(f"workers must be a positive int, got {workers!r} instead.")
    if flops_per_s is not None and not flops_per_s > 0:
        raise BuildInputError(f"flops_per_s must be positive, got {flops_per_s!r} instead.")
    x1, x2 = config.load_data()
    f, params = config.load_model(x1.shape[1:])
    k = config.kernel
    layout = plan_layout(
        f, params, {}, x1, x2, k["kinds"], k["trace_axes"], k["diagonal_axes"],
        config.block_size, devices=1,
    )  # fmt: skip
    plan = Plan(layout["n1"], layout["n2"], layout["block"], layout["symmetric"],
                layout["diagonal"])  # fmt: skip
    vmap_axes = resolve_vmap_axes(f, params, {}, x1, x2, k["vmap_axes"])  # as the build would
    kernel = BlockKernel(
        f, params, k["kinds"], k["trace_axes"], k["diagonal_axes"], vmap_axes,
        k["implementation"], plan.block, diagonal=plan.diagonal, devices=jax.local_devices()[:1],
    )  # fmt: skip
    info = kernel.out_info(x1.shape[1:], x1.dtype)
    lead = (plan.n1,) if plan.diagonal else (plan.n1, plan.n2)
    skip = 1 if plan.diagonal else 2
    shapes = {kind: (*lead, *a.shape[skip:]) for kind, a in info.items()}
    dtype = np.dtype(next(iter(info.values())).dtype)
    per_entry = {kind: math.prod(s[len(lead) :]) * dtype.itemsize for kind, s in shapes.items()}
    entries = stored_entries(FORMAT_VERSION, plan)
    sizes = {kind: entries * size for kind, size in per_entry.items()}
    rows = x1.read(0, min(plan.block, plan.n1))
    cols = None if x2 is None else x2.read(0, min(plan.block, plan.n2))
    return Estimate(
        plan=plan,
        kind_shapes=shapes,
        dtype=str(dtype),
        bytes_per_kind=sizes,
        block_flops=_flops(kernel, rows),
        block_s=_time_block(kernel, rows, cols) if measure else None,
        flops_per_s=flops_per_s,
        workers=workers,
    )


def _flops(kernel: BlockKernel, rows: np.ndarray) -> float | None:
    """XLA's FLOP count of the rectangular block program (None where XLA gives none)."""
    x = jax.ShapeDtypeStruct((kernel.block, *rows.shape[1:]), rows.dtype)
    compiled, _ = kernel.compile("pair", x, x, kernel._params)
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax: one dict per program
        analysis = analysis[0] if analysis else {}
    flops = (analysis or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def _time_block(kernel: BlockKernel, rows: np.ndarray, cols: np.ndarray | None) -> float:
    """Median seconds of one off-diagonal block (after a compile call), over 3 calls."""
    other = rows if cols is None else cols
    kernel(rows, other)  # compile
    times = []
    for _ in range(3):
        start = time.perf_counter()
        kernel(rows, other)
        times.append(time.perf_counter() - start)
    return float(np.median(times))
