"""The registry of structure rules, and how an equation becomes a :class:`Site`."""

from __future__ import annotations

import logging

import jax.numpy as jnp

from bigntk.empirical._structured_derivatives._factor import Factor
from bigntk.empirical._structured_derivatives._graph import Const, Eqn, Graph
from bigntk.empirical._structured_derivatives._rules_linear import LINEAR_RULES
from bigntk.empirical._structured_derivatives._rules_simple import SIMPLE_RULES
from bigntk.empirical._structured_derivatives._site import PULLBACK, Pullback, Rule, Site

logger = logging.getLogger("bigntk.empirical.structured")

RULES: dict[str, Rule] = {**SIMPLE_RULES, **LINEAR_RULES}

#: Several-output primitives that only split or pass their inputs through.
PULLBACK_ONLY = {"split", "optimization_barrier", "device_put"}


def site(graph: Graph, eqn: Eqn, pos: int) -> Site:
    """Equation ``eqn`` seen from its input ``pos``."""
    return Site(
        name=eqn.name,
        params=eqn.params,
        shapes=tuple(graph.shape(a) for a in eqn.ins),
        values=tuple(a.value if isinstance(a, Const) else None for a in eqn.ins),
        pos=pos,
        y_shape=tuple(graph.avals[eqn.outs[0]].shape),
    )


def apply_rule(graph: Graph, eqn: Eqn, pos: int) -> Factor | Pullback | None:
    """The rule's answer for ``eqn`` at input ``pos``, or None when there is no rule.

    Complex inputs or outputs are always pulled back: JAX's transposes then take
    care of the real/complex pairing.
    """
    if eqn.name in PULLBACK_ONLY:
        return PULLBACK
    rule = RULES.get(eqn.name)
    if rule is None or eqn.primitive.multiple_results:
        return None
    if not all(is_real(graph.avals[v].dtype) for v in (eqn.ins[pos], *eqn.outs)):
        return PULLBACK
    try:
        return rule(site(graph, eqn, pos))
    except (AssertionError, IndexError, KeyError, TypeError, ValueError) as e:
        # parameters this rule does not know (e.g. from a newer JAX): the caller falls back
        logger.debug("Structure rule for '%s' failed (%r); using a dense Jacobian.", eqn.name, e)
        return None


def is_real(dtype) -> bool:
    """Real floating point (not complex, not the ``float0`` of integer tangents)."""
    return jnp.issubdtype(dtype, jnp.floating)
