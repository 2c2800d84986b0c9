"""What a build is, from its arguments: layout, kernel settings, spec and probe.

:func:`describe_build` plans the blocks (:func:`plan_layout`, with the block
size from :func:`choose_block_size`), proves the batch axes
(:func:`resolve_vmap_axes`), makes the build's one
:class:`~bigntk.build._settings.KernelSettings`, and from it the store's spec
and probe. The driver calls it to build or resume; ``bigntk verify`` calls it
to compare a config with a store.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import jax

from bigntk.build._compute import kernel_probe, probe_values
from bigntk.build._data import Source
from bigntk.build._identity import params_fingerprint, probe_rows, program_fingerprint
from bigntk.build._settings import KernelSettings
from bigntk.build._spec import block_size_for, canonical_kinds, dim_names, output_axes
from bigntk.empirical import DEFAULT_NTK_IMPLEMENTATION, why_not_batch_independent
from bigntk.errors import BigNTKError, BuildInputError

logger = logging.getLogger(__name__)


class Description(NamedTuple):
    """A build described: ``spec`` (canonical, see :mod:`bigntk.build._spec`), the
    ``settings`` its workers compute with, and ``probe`` (a few kernel entries of
    the first examples, see :mod:`bigntk.build._identity`)."""

    spec: dict
    settings: KernelSettings
    probe: dict


def choose_block_size(
    requested: Any, stored: int | None, kernel: tuple, axes: Any, x1: Source, out: Any, n: int,
    devices: int, platform: str | None, diagonal: bool,
) -> Any:  # fmt: skip
    """The block size of a build: ``requested``, else the store's own, else the rule.

    ``requested=None`` resumes an existing store with its tiling (``stored``),
    whatever this machine's default would be; a new store gets
    :func:`~bigntk.build._spec.default_block_size` through
    :func:`~bigntk.build._spec.block_size_for` (its arguments are described
    there). Values are checked by :func:`plan_layout`.
    """
    if requested is not None:
        return requested
    if stored is not None:
        return stored
    return block_size_for(kernel, axes, x1, out, n, devices, platform, diagonal)


def _output_of(f, params, kwargs, x1: Source) -> jax.ShapeDtypeStruct:
    """``f``'s output for one example (shapes only); one array, or :class:`BuildInputError`."""
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
    return out


def _check_block_size(block_size: Any, n1: int, n2: int, devices: int) -> int:
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
    return block_size


def plan_layout(
    f, params, kwargs, x1: Source, x2: Source | None, kinds, trace_axes, diagonal_axes,
    block_size, devices: int, *, vmap_axes: Any = None,
    implementation: Any = DEFAULT_NTK_IMPLEMENTATION, platform: str | None = None,
    stored_block: int | None = None,
) -> dict:  # fmt: skip
    """The store's layout: ``n1, n2, block, symmetric, diagonal, dims`` and the canonical axes.

    ``block_size`` None: see :func:`choose_block_size` (``platform``: the
    workers', None: this process's device; ``stored_block``: the tiling of the
    store being resumed).
    """
    out = _output_of(f, params, kwargs, x1)
    axes = output_axes(out.ndim, trace_axes, diagonal_axes)
    diagonal = 0 in axes.diagonal
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    if diagonal and n1 != n2:
        raise BuildInputError(
            f"diagonal_axes includes the batch axis, which needs as many x1 as x2 examples; "
            f"got {n1} and {n2}."
        )
    kernel = (f, params, kwargs, kinds, vmap_axes, implementation)
    block_size = choose_block_size(block_size, stored_block, kernel, axes, x1, out, max(n1, n2),
                                   devices, platform, diagonal)  # fmt: skip
    return {
        "n1": n1,
        "n2": n2,
        "block": _check_block_size(block_size, n1, n2, devices),
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
    model: tuple, s1: Source, s2: Source | None, data: tuple[str, str | None], *, kinds,
    trace_axes, diagonal_axes, vmap_axes, implementation, block_size, devices: int,
    platform: str | None = None, stored_block: int | None = None,
) -> Description:  # fmt: skip
    """The :class:`Description` of building ``model`` (``(f, params, kwargs)``) on ``s1, s2``.

    The keyword arguments are :func:`~bigntk.build.build_kernel`'s; ``data`` are
    the inputs' fingerprints (:meth:`Source.scan`); ``platform`` the workers'
    devices and ``stored_block`` the block size of the store being resumed
    (used when ``block_size`` is None, see :func:`choose_block_size`).
    """
    f, params, kwargs = model
    kinds = canonical_kinds(kinds)
    layout = plan_layout(
        f, params, kwargs, s1, s2, kinds, trace_axes, diagonal_axes, block_size, devices,
        vmap_axes=vmap_axes, implementation=implementation, platform=platform,
        stored_block=stored_block,
    )  # fmt: skip
    settings = KernelSettings(
        kinds=kinds,
        trace_axes=tuple(layout.pop("trace_axes")),
        diagonal_axes=tuple(layout.pop("diagonal_axes")),
        vmap_axes=resolve_vmap_axes(f, params, kwargs, s1, s2, vmap_axes),
        implementation=implementation,
        block=layout["block"],
        diagonal=layout["diagonal"],
    )
    fingerprints, probe = _compute_identity(model, s1, s2, settings, layout)
    return Description(settings.spec(layout, fingerprints, data), settings, probe)


def _compute_identity(model: tuple, s1: Source, s2: Source | None, settings: KernelSettings,
                      layout: dict) -> tuple[dict, dict]:  # fmt: skip
    """``(model fingerprints, probe)``; completes ``layout`` with the output shape and dtype."""
    f, params, kwargs = model
    args = (settings.kinds, settings.trace_axes, settings.diagonal_axes, settings.vmap_axes,
            settings.implementation)  # fmt: skip
    try:
        r1 = s1.read(0, probe_rows(len(s1)))
        r2 = None if layout["symmetric"] else (s2 or s1).read(0, probe_rows(len(s2 or s1)))
        kernels = kernel_probe(f, params, kwargs, *args, r1, r2)
        program = program_fingerprint(f, params, kwargs, s1.shape[1:], s1.dtype)
    except BigNTKError:
        raise
    except (TypeError, ValueError) as e:  # vmap_axes, dtypes jacrev refuses, ...
        raise BuildInputError(f"The kernel settings do not fit f: {e}") from e
    first = kernels[settings.kinds[0]]  # a block's trailing shape and dtype
    layout["out_shape"] = list(first.shape[1 if settings.diagonal else 2 :])
    layout["dtype"] = str(first.dtype)
    model_fingerprints = {"program": program, "params": params_fingerprint(params)}
    return model_fingerprints, {"dtype": layout["dtype"], "values": probe_values(kernels)}
