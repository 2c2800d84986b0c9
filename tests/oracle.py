"""An independent float64 oracle: full Jacobians with jax.jacobian, then tensordot.

It shares no code with bigntk: it builds the full ``(*out1, *out2)`` kernel of
every output leaf and then applies the trace/diagonal convention with a
NumPy einsum written from the definition.
"""

import string

import jax
import jax.numpy as jnp
import numpy as np


def _canon(axes, ndim):
    if isinstance(axes, int):
        axes = (axes,)
    return sorted({a % ndim for a in axes}) if ndim else []


def to_convention(full, ndim, trace_axes, diagonal_axes):
    """Full kernel ``(*s1, *s2)`` -> the NT output-axis convention."""
    trace, diag = _canon(trace_axes, ndim), _canon(diagonal_axes, ndim)
    a = string.ascii_lowercase[:ndim]
    b = "".join(a[k] if k in trace or k in diag else string.ascii_uppercase[k] for k in range(ndim))
    out = "".join("" if k in trace else a[k] if k in diag else a[k] + b[k] for k in range(ndim))
    size = int(np.prod([full.shape[k] for k in trace])) if trace else 1
    return np.einsum(f"{a}{b}->{out}", np.asarray(full)) / size


def oracle(f, params, x1, x2, trace_axes=(-1,), diagonal_axes=(), kw1=None, kw2=None):
    """``(nngp_leaves, ntk_leaves)`` of f in float64, as lists over output leaves."""
    kw1 = kw1 or {}
    kw2 = kw1 if kw2 is None else kw2
    x2 = x1 if x2 is None else x2

    def to64(t):
        return jax.tree.map(
            lambda v: (
                jnp.asarray(v, jnp.float64)
                if jnp.issubdtype(jnp.asarray(v).dtype, jnp.floating)
                else v
            ),
            t,
        )

    params64, x1, x2 = to64(params), to64(x1), to64(x2)
    diff_leaves, treedef = jax.tree.flatten(params64)
    is_diff = [
        hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating) for leaf in diff_leaves
    ]

    def leaves_of(x, kw):
        def g(dl):
            it = iter(dl)
            full = [next(it) if d else leaf for d, leaf in zip(is_diff, diff_leaves)]
            out = f(jax.tree.unflatten(treedef, full), x, **kw)
            return [jnp.asarray(o) for o in jax.tree.leaves(out)]  # Python floats too

        return g

    dl = [leaf for d, leaf in zip(is_diff, diff_leaves) if d]
    g1, g2 = leaves_of(x1, kw1), leaves_of(x2, kw2)
    fx1, fx2 = g1(dl), g2(dl)
    j1, j2 = jax.jacobian(g1)(dl), jax.jacobian(g2)(dl)
    nngp, ntk = [], []
    for o, (a, b) in enumerate(zip(fx1, fx2)):
        nd = a.ndim
        nngp.append(to_convention(np.tensordot(a, b, 0), nd, trace_axes, diagonal_axes))
        full = np.zeros(a.shape + b.shape)
        for w, leaf in enumerate(dl):
            pax = list(range(nd, nd + leaf.ndim))
            full = full + np.tensordot(np.asarray(j1[o][w]), np.asarray(j2[o][w]), (pax, pax))
        ntk.append(to_convention(full, nd, trace_axes, diagonal_axes))
    return nngp, ntk
