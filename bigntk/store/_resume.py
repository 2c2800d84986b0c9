"""Whether a store may be resumed by a build: the same computation, or a JAX upgrade of it.

The same spec resumes once the probe (a few kernel entries, see ``_identity``)
agrees with the stored one to its tolerance. A JAX or jaxlib upgrade may print
the same model's program differently: a store whose spec differs *only* in
the model's program, made with other JAX versions, resumes when the probe
agrees, and the change is recorded in its attributes (``version_changes``);
with the same versions a changed program is another model. Anything else is
refused with a message naming what differs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

_JAX = ("jax", "jaxlib")

# A probe entry may differ by this much, relative to the largest |entry|, between two
# devices running the same computation (float32 matrix products on GPUs may use TF32).
PROBE_RTOL = {"float16": 2e-2, "bfloat16": 2e-2, "float32": 5e-3, "float64": 1e-9}


def probe_tolerance(dtype: Any) -> float:
    """Relative tolerance (to the probe's largest |entry|) for one ``dtype``."""
    return PROBE_RTOL.get(str(np.dtype(dtype)), 5e-3)


def probe_difference(stored: dict, current: dict) -> float:
    """Largest difference between two probes, relative to the stored probe's largest |entry|.

    ``inf`` when their kinds or shapes differ.
    """
    if set(stored) != set(current):
        return float("inf")
    worst = 0.0
    for kind, values in stored.items():
        a, b = np.asarray(values, np.float64), np.asarray(current[kind], np.float64)
        if a.shape != b.shape:
            return float("inf")
        scale = max(float(np.max(np.abs(a), initial=0.0)), np.finfo(np.float64).tiny)
        diff = float(np.max(np.abs(a - b), initial=0.0))
        if not np.isfinite(diff):
            return float("inf")
        worst = max(worst, diff / scale)
    return worst


def _describe_upgrade(upgraded: dict) -> str:
    return ", ".join(f"{k} {a} -> {b}" for k, (a, b) in upgraded.items())


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the entries where two specs differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += differences(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def _mismatch_message(path: str, keys: list[str], old: dict, new: dict) -> str:
    def get(spec: dict, key: str) -> Any:
        for part in key.split("."):
            spec = spec.get(part) if isinstance(spec, dict) else None
        return spec

    details = "; ".join(f"{k}: stored {get(old, k)!r}, requested {get(new, k)!r}" for k in keys[:5])
    return (
        f"The kernel store at {path} was built with a different spec ({details}). Nothing was "
        "overwritten. Use another path, or pass overwrite=True (--overwrite) to replace it."
    )


def why_not_resumable(
    store: Any, spec: dict, digest: str, versions: dict, probe: dict | None
) -> str | None:
    """None when ``spec`` (with ``probe``) may resume this store; else the refusal."""
    meta = store.meta
    if "spec_version" in spec and "spec_version" not in store.spec:
        return (
            f"The kernel store at {store.path} was made by an earlier bigntk whose "
            "fingerprints could not tell models apart (by name and bytecode) and sampled "
            "64 rows of the data, so it cannot be shown to hold this computation. Nothing "
            "was overwritten. Use another path, or pass overwrite=True (--overwrite) to "
            "rebuild it."
        )
    changed = differences(store.spec, spec)
    upgraded = {k: (meta.get("versions", {}).get(k), versions.get(k)) for k in _JAX}
    upgraded = {k: v for k, v in upgraded.items() if v[0] != v[1] and v[1] is not None}
    if changed and changed != ["model.program"]:
        return _mismatch_message(store.path, changed, store.spec, spec)
    if changed and not upgraded:
        return (
            f"The kernel store at {store.path} was made by another model: its program "
            "(the jaxpr of f's derivatives, with its constants: activations, W_std, "
            "closure constants, keyword arguments) differs from this one's, with the same "
            "parameters and data, on the same JAX. Nothing was overwritten. Use another "
            "path, or pass overwrite=True (--overwrite) to replace it."
        )
    difference = None
    stored_probe = meta.get("probe")
    if probe is not None and stored_probe is not None:
        difference = probe_difference(stored_probe["values"], probe["values"])
        tolerance = probe_tolerance(stored_probe["dtype"])
        if not difference <= tolerance:
            return (
                f"The kernel store at {store.path} holds other values than this build "
                f"computes: a few kernel entries of the first examples differ by "
                f"{difference:.3g} (relative to the largest; tolerance {tolerance:g}). "
                "The spec matches, so the change is one bigntk's fingerprint cannot see "
                "(a host callback's arguments, a custom_vjp's backward function"
                + (", or " + _describe_upgrade(upgraded) if upgraded else "")
                + "). Nothing was overwritten. Use another path, or pass overwrite=True "
                "(--overwrite) to replace it."
            )
    if upgraded:
        record = {
            "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "versions": {k: {"stored": a, "now": b} for k, (a, b) in upgraded.items()},
            "program_changed": bool(changed),
            "probe_max_rel_diff": difference,
        }
        logger.warning(
            "Resuming %s across %s%s; the probe agrees to %s. Recorded in the store's "
            "attributes (version_changes).", store.path, _describe_upgrade(upgraded),
            " (the model's program prints differently)" if changed else "", difference,
        )  # fmt: skip
        updates: dict[str, Any] = {
            "version_changes": [*meta.get("version_changes", []), record],
            "versions": {**meta.get("versions", {}), **versions},
        }
        if changed:
            updates.update(spec=spec, spec_hash=digest)
            store.spec, store.spec_hash = spec, digest
        store.update_meta(**updates)
    return None
