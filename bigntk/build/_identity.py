"""What a build computes, as a fingerprint: the model's program, its parameters, a probe.

A store is resumed only by the very same computation, so a build's identity is
what will run, not what the model is called:

- **the program**: the jaxprs of ``f``'s forward-mode (JVP) and reverse-mode
  (VJP) derivatives, traced on two examples of the data's feature shape and
  dtype, printed, with the values of every constant they capture (closure
  arrays, array keyword arguments). The JVP program inlines custom JVP rules,
  the VJP program custom VJP rules, so activations, ``W_std``, closure
  constants and keyword arguments are all in the text. A jaxpr names no
  device: a store started on a laptop's CPU resumes on a GPU cluster;
- **the parameter values**, in the order the program reads them;
- **a numeric probe**: a few kernel entries of the first examples, recorded
  in the store and compared on every resume (to a tolerance that admits
  another device's rounding). It catches what the text cannot see: a host
  callback is named by its function only (its arguments are opaque to JAX),
  and so is a ``custom_vjp``'s backward function inside the JVP text.

A JAX upgrade may print the same program differently; see
:func:`bigntk.store._writer.KernelStore.create_or_resume` for what then happens.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

PROBE_ROWS = 4
_ADDRESS = re.compile(r" at 0x[0-9a-fA-FX]+")


def _strip_partials(text: str) -> str:
    """``functools.partial(<function g>, a, b)`` -> ``<function g>``: a callback's name only."""
    out, i, marker = [], 0, "functools.partial("
    while (start := text.find(marker, i)) >= 0:
        out.append(text[i:start])
        depth, j = 0, start + len(marker) - 1
        while j < len(text):
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            if depth == 0:
                break
            j += 1
        inner = text[start + len(marker) : j]
        out.append(inner.split(",", 1)[0])
        i = j + 1
    out.append(text[i:])
    return "".join(out)


def _canonical_text(closed: Any) -> str:
    return _strip_partials(_ADDRESS.sub("", str(closed.jaxpr)))


def _update_array(h: Any, value: Any) -> None:
    if jax.dtypes.issubdtype(getattr(value, "dtype", None), jax.dtypes.prng_key):
        value = jax.random.key_data(value)
    a = np.asarray(value)
    h.update(f"{a.shape}{a.dtype}".encode())
    h.update(np.ascontiguousarray(a).tobytes())


def _is_array(leaf: Any) -> bool:
    return hasattr(leaf, "dtype") and hasattr(leaf, "shape")


def program_fingerprint(
    f: Callable, params: Any, kwargs: dict, feature_shape: tuple[int, ...], dtype: Any
) -> str:
    """Hash of the JVP and VJP programs of ``x -> f(params, x, **kwargs)`` and their constants.

    Parameter *values* are not in it (see :func:`params_fingerprint`); their
    shapes and dtypes are, through the program.
    """
    leaves, treedef = jax.tree.flatten(params)
    diff = [
        i
        for i, v in enumerate(leaves)
        if _is_array(v) and jax.dtypes.issubdtype(v.dtype, np.inexact)
    ]

    def apply(d: list, x: Any) -> Any:
        full = list(leaves)
        for i, v in zip(diff, d, strict=True):
            full[i] = v
        return f(jax.tree.unflatten(treedef, full), x, **kwargs)

    def jvp(d, t, x):
        return jax.jvp(lambda q: apply(q, x), (d,), (t,))

    def vjp(d, x, ct):
        out, pullback = jax.vjp(lambda q: apply(q, x), d)
        return out, pullback(ct)

    d = [jax.ShapeDtypeStruct(np.shape(leaves[i]), leaves[i].dtype) for i in diff]
    x = jax.ShapeDtypeStruct((2, *feature_shape), dtype)
    h = hashlib.sha256()
    closed = jax.make_jaxpr(jvp)(d, d, x)
    out = jax.eval_shape(apply, d, x)
    programs = [closed, jax.make_jaxpr(vjp)(d, x, out)]
    for program in programs:
        h.update(_canonical_text(program).encode())
        for const in program.consts:
            _update_array(h, const)
    return h.hexdigest()[:16]


def params_fingerprint(params: Any) -> str:
    """Hash of the parameter values (non-array leaves by ``repr``), in flattening order."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        if _is_array(leaf):
            _update_array(h, leaf)
        else:
            h.update(repr(leaf).encode())
    return h.hexdigest()[:16]


def probe_rows(n: int) -> int:
    """Rows of x1 (and of x2) the probe uses."""
    return min(n, PROBE_ROWS)
