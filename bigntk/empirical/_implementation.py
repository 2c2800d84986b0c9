"""``NtkImplementation``: the ways of computing the empirical NTK."""

from __future__ import annotations

import enum
from collections.abc import Callable

from bigntk.empirical._jacobian_contraction import ntk_jacobian_contraction
from bigntk.empirical._ntk_vector_products import ntk_vector_products
from bigntk.empirical._structured_derivatives import ntk_structured_derivatives
from bigntk.errors import UnsupportedImplementationError


class NtkImplementation(enum.IntEnum):
    """How the empirical NTK is computed; plain ints are accepted wherever this is.

    * ``AUTO`` (0): the fastest for the shapes at hand, among those that fit in
      the memory budget: timed on the first call's arguments (cached per
      shape signature and device kind), or predicted from XLA's cost analysis
      under ``jax.jit``. The default.
    * ``JACOBIAN_CONTRACTION`` (1): materialise both Jacobians, contract them.
      Usually fastest for small outputs and moderate parameter counts.
    * ``NTK_VECTOR_PRODUCTS`` (2): JVPs of VJPs over a basis of outputs; never
      materialises a Jacobian. Good when outputs are few and parameters many.
    * ``STRUCTURED_DERIVATIVES`` (3): Jacobian structure of each primitive
      (Novak et al., 2022): contracts ``df/dy`` with each primitive's structured
      ``dy/dw`` and never forms the Jacobians. Usually fastest for wide
      fully connected and convolutional networks.
    """

    AUTO = 0
    JACOBIAN_CONTRACTION = 1
    NTK_VECTOR_PRODUCTS = 2
    STRUCTURED_DERIVATIVES = 3


DEFAULT_NTK_IMPLEMENTATION = NtkImplementation.AUTO

_IMPLEMENTATIONS: dict[NtkImplementation, Callable] = {
    NtkImplementation.JACOBIAN_CONTRACTION: ntk_jacobian_contraction,
    NtkImplementation.NTK_VECTOR_PRODUCTS: ntk_vector_products,
    NtkImplementation.STRUCTURED_DERIVATIVES: ntk_structured_derivatives,
}


def _supported() -> str:
    return ", ".join(f"{i.name} ({int(i)})" for i in (NtkImplementation.AUTO, *_IMPLEMENTATIONS))


def as_implementation(implementation: int | str | NtkImplementation) -> NtkImplementation:
    """``implementation`` as an :class:`NtkImplementation`; clear errors otherwise."""
    try:
        if isinstance(implementation, str):
            impl = NtkImplementation[implementation.upper()]
        else:
            impl = NtkImplementation(implementation)
    except (KeyError, ValueError):
        valid = ", ".join(f"{i.name} ({int(i)})" for i in NtkImplementation)
        raise ValueError(
            f"implementation must be one of {valid}, got {implementation!r} instead."
        ) from None
    if impl != NtkImplementation.AUTO and impl not in _IMPLEMENTATIONS:
        raise UnsupportedImplementationError(
            f"implementation={impl.name} ({int(impl)}) is not available in this version of "
            f"bigntk. Supported: {_supported()}; e.g. pass "
            "implementation=NtkImplementation.AUTO."
        )
    return impl


def get_implementation(implementation: int | str | NtkImplementation) -> Callable:
    """The function computing the NTK for ``implementation`` (AUTO: a placeholder that raises).

    AUTO is resolved per call by the kernel function's planner
    (``bigntk.empirical._planning``); this only checks it is valid.
    """
    impl = as_implementation(implementation)
    if impl == NtkImplementation.AUTO:
        return _auto_unresolved
    return _IMPLEMENTATIONS[impl]


def _auto_unresolved(pb) -> list:
    raise AssertionError("AUTO must be resolved to an implementation before computing.")
