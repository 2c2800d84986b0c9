"""Structure rules of the primitives where ``w`` meets data: products, convolutions, lookups.

These are where structured derivatives save the most: ``∂y/∂w`` is the other
operand (``dot_general``), the input's patches (convolutions) or a one-hot
matrix of the indices (``gather``), so ``df/dy`` is contracted with it directly
and the ``out × params`` Jacobian is never formed.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from bigntk.empirical._structured_derivatives._factor import Factor
from bigntk.empirical._structured_derivatives._site import Rule, Site


def _dot_general(site: Site) -> Factor | None:
    """``y = dot_general(lhs, rhs)``: the other operand, identity on ``w``'s free axes."""
    other = site.other(1 - site.pos)
    if other is None:
        return None
    (lc, rc), (lb, rb) = site.params["dimension_numbers"]
    nd_l, nd_r = len(site.shapes[0]), len(site.shapes[1])
    l_free = [d for d in range(nd_l) if d not in lc and d not in lb]
    r_free = [d for d in range(nd_r) if d not in rc and d not in rb]
    nb = len(lb)
    # y's axes: batch, lhs free, rhs free -- labels 0..len(y)-1
    lhs = [0] * nd_l
    rhs = [0] * nd_r
    for i, (a, b) in enumerate(zip(lb, rb, strict=True)):
        lhs[a] = rhs[b] = i
    for i, d in enumerate(l_free):
        lhs[d] = nb + i
    for i, d in enumerate(r_free):
        rhs[d] = nb + len(l_free) + i
    ny = len(site.y_shape)
    for i, (a, b) in enumerate(zip(lc, rc, strict=True)):
        lhs[a] = rhs[b] = ny + i
    w, o = (rhs, lhs) if site.pos == 1 else (lhs, rhs)
    return Factor.make([(other, o)], range(ny), w, site.y_shape, site.w_shape)


def _conv(site: Site) -> Factor | None:
    """Kernel as the parameter: ``y[n, o, s] = Σ patches[n, g(o), i, k, s] · w[o, i, k]``."""
    p = site.params
    lhs = site.other(0)
    if site.pos != 1 or lhs is None or p["batch_group_count"] != 1:
        return None
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    ws = site.w_shape
    groups = p["feature_group_count"]
    filt = [ws[d] for d in rhs_spec[2:]]
    patches = lax.conv_general_dilated_patches(
        jnp.transpose(lhs, lhs_spec),
        filt,
        p["window_strides"],
        p["padding"],
        p["lhs_dilation"],
        p["rhs_dilation"],
        precision=lax.Precision.HIGHEST,
    )
    n, c = lhs.shape[lhs_spec[0]], lhs.shape[lhs_spec[1]]
    out_sp = patches.shape[2:]
    patches = patches.reshape(n, groups, c // groups, *filt, *out_sp)
    ny, nsp = len(site.y_shape), len(filt)
    # labels: y axes 0..ny-1; w's in-feature and filter axes; the group
    w = [0] * len(ws)
    w[rhs_spec[0]] = out_spec[1]
    w[rhs_spec[1]] = ny
    for j, d in enumerate(rhs_spec[2:]):
        w[d] = ny + 1 + j
    group = ny + 1 + nsp
    patch_labels = [out_spec[0], group, ny, *range(ny + 1, ny + 1 + nsp), *out_spec[2:]]
    arrays = [(patches, patch_labels)]
    o = ws[rhs_spec[0]]
    if groups == 1:
        patches = patches.reshape(patches.shape[:1] + patches.shape[2:])
        arrays = [(patches, [lab for lab in patch_labels if lab != group])]
    else:
        which = jnp.arange(o)[:, None] // (o // groups) == jnp.arange(groups)[None, :]
        arrays.append((which.astype(patches.dtype), [out_spec[1], group]))
    return Factor.make(arrays, range(ny), w, site.y_shape, ws)


def _gather(site: Site) -> Factor | None:
    """``y[b, off] = w[start(b) + off]``: one one-hot matrix per indexed axis of ``w``."""
    idx = site.other(1)
    p = site.params
    dn = p["dimension_numbers"]
    if site.pos != 0 or idx is None:
        return None
    ws, ys = site.w_shape, site.y_shape
    sizes = p["slice_sizes"]
    ny = len(ys)
    batch = [k for k in range(ny) if k not in dn.offset_dims]  # y's axes of idx[..., 0]
    operand_batching = tuple(getattr(dn, "operand_batching_dims", ()))
    index_batching = tuple(getattr(dn, "start_indices_batching_dims", ()))
    kept = [
        d for d in range(len(ws)) if d not in dn.collapsed_slice_dims and d not in operand_batching
    ]
    offset_of = dict(zip(kept, dn.offset_dims, strict=True))  # w axis -> y axis
    fill = "FILL_OR_DROP" in str(p.get("mode"))
    w = list(range(ny, ny + len(ws)))
    arrays = []
    valid = None
    for d in range(len(ws)):
        if d in operand_batching:  # w's axis d is y's batch axis: block diagonal
            w[d] = batch[index_batching[operand_batching.index(d)]]
            continue
        if d in dn.start_index_map:
            raw = idx[..., dn.start_index_map.index(d)]
            hi = ws[d] - sizes[d]
            start = jnp.clip(raw, 0, hi)
            if fill:
                ok = (raw >= 0) & (raw <= hi)
                valid = ok if valid is None else valid & ok
        else:
            start = None
        pos = jnp.arange(ws[d])
        if d in offset_of:
            y_ax = offset_of[d]
            if start is None and sizes[d] == ws[d]:
                w[d] = y_ax  # the whole axis is kept: identity
                continue
            off = jnp.arange(sizes[d])
            s = 0 if start is None else start[..., None, None]
            hot = pos == s + off[:, None]
            labels = ([*batch] if start is not None else []) + [y_ax, w[d]]
        else:  # collapsed: a single entry
            s = 0 if start is None else start[..., None]
            hot = pos == s
            labels = ([*batch] if start is not None else []) + [w[d]]
        arrays.append((hot.astype(jnp.float32), labels))
    if valid is not None:
        arrays.append((valid.astype(jnp.float32), batch))
    return Factor.make(arrays, range(ny), w, ys, ws)


LINEAR_RULES: dict[str, Rule] = {
    "dot_general": _dot_general,
    "conv_general_dilated": _conv,
    "gather": _gather,
}
