"""One compiled kernel program per build, sharded over a worker's local devices.

Blocks are padded to the full block size (the last row is repeated) so that a
single compiled program serves every block; results are cropped afterwards.
The block's x1 rows are split over the devices of a ``jax.sharding.Mesh``
(``jax.shard_map``); x2 rows and the parameters are replicated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bigntk.empirical import (
    NtkImplementation,
    as_implementation,
    compile_by_rule,
    compile_with_options,
    empirical_kernel_fn,
)

if TYPE_CHECKING:
    from bigntk.build._settings import KernelSettings


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    if len(x) == rows:
        return x
    return np.concatenate([x, np.repeat(x[-1:], rows - len(x), axis=0)])


def kernel_shapes(
    f, params, kwargs, kinds, trace_axes, diagonal_axes, vmap_axes, implementation, x1, x2
) -> dict[str, Any]:
    """``{kind: ShapeDtypeStruct}`` of the kernels of ``x1, x2`` (shapes); nothing is computed.

    Every implementation gives the same shapes; AUTO would time them all to find them, so
    JACOBIAN_CONTRACTION stands in for it.
    """
    impl = as_implementation(implementation)
    if impl == NtkImplementation.AUTO:
        impl = NtkImplementation.JACOBIAN_CONTRACTION
    kernel_fn = empirical_kernel_fn(f, trace_axes, diagonal_axes, vmap_axes, impl)
    return jax.eval_shape(
        lambda a, b: kernel_fn(a, b, tuple(kinds), params, **kwargs)._asdict(), x1, x2
    )


def kernel_probe(
    f, params, kwargs, kinds, trace_axes, diagonal_axes, vmap_axes, implementation, x1, x2
) -> dict[str, np.ndarray]:
    """``{kind: kernel}`` of a few rows ``x1, x2`` (``x2`` None: ``K(x1, x1)``), computed here.

    AUTO is computed by JACOBIAN_CONTRACTION: the probe is compared to a tolerance, never
    bit for bit. Its shapes and dtypes are those of every block (trailing axes). The
    program runs once on a few rows, so XLA compiles it without its backend optimisations
    (most of the driver's one-off CPU otherwise: ~40% less compile time on CPU).
    """
    impl = as_implementation(implementation)
    if impl == NtkImplementation.AUTO:
        impl = NtkImplementation.JACOBIAN_CONTRACTION
    kernel_fn = empirical_kernel_fn(f, trace_axes, diagonal_axes, vmap_axes, impl)
    call = jax.jit(lambda a, b, p: kernel_fn(a, b, tuple(kinds), p, **kwargs)._asdict())
    compiled = compile_with_options(call.lower(x1, x2, params), _PROBE_COMPILE)
    out = compiled(x1, x2, params)
    return {kind: np.asarray(value) for kind, value in out.items()}


# XLA debug options for the probe's one run (generic options, not CPU-only; a backend that
# refuses them compiles with its defaults: ``bigntk.empirical.compile_with_options``)
_PROBE_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def probe_values(kernels: dict[str, np.ndarray], entries: int = 512) -> dict[str, list[float]]:
    """At most ``entries`` values per kind of :func:`kernel_probe`'s kernels (the first,
    flattened), as plain floats for the store's attributes."""
    return {
        kind: np.ravel(np.asarray(value, np.float64))[:entries].tolist()
        for kind, value in kernels.items()
    }


class BlockKernel:
    """``(x1 rows, x2 rows) -> {kind: block}`` for one build's kernel settings.

    Args:
        f, params, kwargs: the model, called as ``f(params, x, **kwargs)``.
        kinds: kernels to compute (``'ntk'``, ``'nngp'``).
        trace_axes, diagonal_axes, vmap_axes, implementation: as in
            :func:`bigntk.empirical_kernel_fn`.
        block: rows per block; a multiple of the number of devices.
        diagonal: the batch axis is a diagonal axis (blocks are ``(rows, *out)``).
        devices: devices to shard rows over (default: all local devices).
    """

    def __init__(
        self,
        f: Callable,
        params: Any,
        kinds: Sequence[str],
        trace_axes: Any,
        diagonal_axes: Any,
        vmap_axes: Any,
        implementation: Any,
        block: int,
        kwargs: dict | None = None,
        diagonal: bool = False,
        devices: Sequence[Any] | None = None,
    ):
        devices = list(devices or jax.local_devices())
        if block % len(devices):
            raise ValueError(
                f"block size {block} must be a multiple of the {len(devices)} local devices."
            )
        self.block = block
        self.diagonal = diagonal
        self.kinds = tuple(kinds)
        self.devices = devices
        mesh = Mesh(np.array(devices), ("rows",))
        rows = NamedSharding(mesh, PartitionSpec("rows"))
        replicated = NamedSharding(mesh, PartitionSpec())
        kernel_fn = empirical_kernel_fn(f, trace_axes, diagonal_axes, vmap_axes, implementation)
        self._kernel_fn = kernel_fn
        self._implementation = as_implementation(implementation)
        self._auto = self._implementation == NtkImplementation.AUTO
        self._settings = (f, trace_axes, diagonal_axes, vmap_axes, self._implementation)
        self._auto_decided: set[bool] = set()  # for which calls (x2 None or given)
        self._executables: dict[str, Any] = {}  # 'self' and 'pair' programs, compiled
        self.cpu_paths: dict[str, str | None] = {}  # the CPU path each was compiled for
        kwargs = dict(kwargs or {})
        self._kwargs = kwargs
        self._params = jax.device_put(params, replicated)
        self._rows, self._replicated = rows, replicated
        self._x2_sharding = rows if diagonal else replicated

        def pair(a, b, p):
            return kernel_fn(a, b, self.kinds, p, **kwargs)._asdict()

        # Each device computes its rows of the block against all columns (diagonal
        # builds: its rows against the same rows of x2). shard_map states this
        # decomposition explicitly; letting the SPMD partitioner propagate row
        # shardings through vmapped Jacobians gave wrong NTKs for Conv+Relu on
        # jax 0.10 (CPU, 4 devices), see tests/test_build.py.
        P = PartitionSpec
        self._fn = jax.jit(
            jax.shard_map(
                pair,
                mesh=mesh,
                in_specs=(P("rows"), P("rows") if diagonal else P(), P()),
                out_specs=P("rows"),
                check_vma=False,
            )
        )
        # K(x, x) on one device: x's derivatives computed once (for diagonal blocks)
        self._fn_self = (
            jax.jit(lambda a, p: kernel_fn(a, None, self.kinds, p, **kwargs)._asdict())
            if len(devices) == 1
            else None
        )

    @classmethod
    def from_settings(
        cls, f: Callable, params: Any, kwargs: dict, settings: KernelSettings,
        devices: Sequence[Any] | None = None,
    ) -> BlockKernel:  # fmt: skip
        """The block kernel of a build's :class:`~bigntk.build._settings.KernelSettings`."""
        return cls(f, params, settings.kinds, settings.trace_axes, settings.diagonal_axes,
                   settings.vmap_axes, settings.implementation, settings.block, kwargs=kwargs,
                   diagonal=settings.diagonal, devices=devices)  # fmt: skip

    def out_info(self, feature_shape: tuple[int, ...], dtype: Any) -> dict[str, Any]:
        """``{kind: ShapeDtypeStruct}`` of one padded block."""
        x = jax.ShapeDtypeStruct((self.block, *feature_shape), dtype)
        f, *settings = self._settings
        return kernel_shapes(f, self._params, self._kwargs, self.kinds, *settings, x, x)

    def __call__(self, x1: np.ndarray, x2: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Kernel blocks ``(len(x1), len(x2), *out)`` (diagonal builds: ``(len(x1), *out)``).

        ``x2=None`` computes ``K(x1, x1)``, sharing x1's derivatives.
        """
        n1 = len(x1)
        n2 = n1 if x2 is None else len(x2)
        if self._auto and (x2 is None) not in self._auto_decided:  # blocks share one shape
            self._decide(x1, x2)
            self._auto_decided.add(x2 is None)
        a = jax.device_put(_pad_rows(x1, self.block), self._rows)
        if x2 is None and self._fn_self is not None:
            out = self._run("self", a, self._params)
        else:
            x2 = x1 if x2 is None else x2
            b = jax.device_put(_pad_rows(x2, self.block), self._x2_sharding)
            out = self._run("pair", a, b, self._params)
        crop = (slice(n1),) if self.diagonal else (slice(n1), slice(n2))
        return {kind: np.asarray(value)[crop] for kind, value in out.items()}

    def compile(self, which: str, *args: Any) -> tuple[Any, str | None]:
        """``(executable, CPU path)`` of the ``'self'`` or ``'pair'`` program for ``args``.

        The path comes from the rule alone (``bigntk.empirical.compile_by_rule``), never from
        timing, so every worker of a build compiles the same program.
        """
        lowered = (self._fn_self if which == "self" else self._fn).lower(*args)
        return compile_by_rule(lowered, self.devices[0].platform)

    def _run(self, which: str, *args: Any) -> dict[str, Any]:
        """The ``'self'`` or ``'pair'`` program on ``args``, compiled once (:meth:`compile`)."""
        exe = self._executables.get(which)
        if exe is None:
            exe, self.cpu_paths[which] = self.compile(which, *args)
            self._executables[which] = exe
        return exe(*args)

    def _decide(self, x1: np.ndarray, x2: np.ndarray | None) -> NtkImplementation:
        """AUTO: time the implementations on this block's per-device shapes, once per shape.

        Inside the sharded program AUTO could only predict from XLA's cost
        analysis; a trial on concrete rows here is cached by the kernel function
        under the same signature and used when the program is traced.
        """
        per_device = self.block // len(self.devices)
        a = _pad_rows(x1, self.block)[:per_device]
        if x2 is None and self._fn_self is not None:
            b = None
        elif self.diagonal:
            b = _pad_rows(x1 if x2 is None else x2, self.block)[:per_device]
        else:
            b = _pad_rows(x1 if x2 is None else x2, self.block)
        return self._kernel_fn.plan(a, b, self.kinds, self._params, **self._kwargs).implementation

    def choose(self, x1: np.ndarray, x2: np.ndarray | None = None) -> NtkImplementation:
        """The implementation AUTO picks for blocks like this one (timed here, on these rows)."""
        return self._decide(x1, x2) if self._auto else self._implementation
