"""``verify_store``: every check of a built store, and with its build config a recomputation.

The checks themselves are in :mod:`bigntk.build._verify`; this module runs
them in order and returns a :class:`VerifyReport`, which ``bigntk verify``
prints.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from bigntk.build._verify import (
    Check,
    check_config,
    check_store,
    choose_method,
    committed_blocks,
    describe,
    recompute,
    recorded_implementation,
)
from bigntk.errors import BuildInputError
from bigntk.store import KernelStore


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_store` found.

    Attributes:
        path: the store.
        committed: blocks the store's manifest records as committed.
        total: blocks in the store's plan.
        checks: every check, in order (the config's first, when one was given).
        scope: how far the checks went, one clause: store checks only, or the
            recomputation made (empty when the config does not match the store).
    """

    path: str
    committed: int
    total: int
    checks: tuple[Check, ...]
    scope: str

    @property
    def failed(self) -> int:
        """How many checks failed."""
        return sum(not c.ok for c in self.checks)

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return not self.failed

    def lines(self) -> list[str]:
        """The report as text: a header, one line per check, a verdict."""
        header = f"bigntk verify: {self.path} ({self.committed}/{self.total} blocks committed)"
        out = [header + (f"; {self.scope}" if self.scope else "")]
        out += [f"  {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]
        verdict, passed = "FAIL" if self.failed else "PASS", len(self.checks) - self.failed
        out.append(f"{verdict}: {passed} of {len(self.checks)} checks passed")
        return out


def verify_store(
    target: Any,
    *,
    blocks: int = 3,
    rows: int = 4,
    seed: int = 0,
    method: str | None = None,
    tolerance: float | None = None,
) -> VerifyReport:
    """Check a built store; given its build config, also recompute sampled entries.

    Args:
        target: the store (a path or URL), or the :class:`bigntk.config.BuildConfig`
            it was built from (its model and data allow the recomputation).
        blocks: blocks sampled for the PSD checks and the recomputation.
        rows: rows and columns recomputed per sampled block.
        seed: seed of the samples.
        method: how to recompute: ``'reference'`` (float64 ``jax.jacobian``), or
            an implementation's name other than the store's; None: the reference
            unless its Jacobians would exceed 2 GiB.
        tolerance: largest accepted error of a recomputed entry, relative to the
            sample's largest entry (default: from the store's dtype).

    Returns:
        A :class:`VerifyReport`; ``report.ok`` when every check passed.

    Raises:
        BuildInputError: an argument is invalid, or ``method`` is the store's own.
    """
    _check_counts(blocks, rows, tolerance)
    config = None if isinstance(target, str | os.PathLike) else target
    store = KernelStore.open(os.fspath(target) if config is None else config.path)
    done = int(committed_blocks(store).sum())
    checks, good = check_store(store, blocks, seed)
    scope = "store checks only (give the build config to also recompute entries)"
    if config is not None:
        x1, x2 = config.load_data()
        f, params = config.load_model(x1.shape[1:])
        match = check_config(store, f, params, x1, x2, config.kernel, config.data_fingerprint)
        checks.insert(0, match)
        scope = ""
        if match.ok:
            chosen = choose_method(store, method, f, params, x1.read(0, 1), rows)
            recorded = recorded_implementation(store)
            scope = (
                f"recomputing entries of {min(blocks, int(good.sum()))} blocks by "
                f"{describe(chosen)} (the store was built by "
                f"{recorded.name if recorded is not None else 'AUTO'})"
            )
            checks += recompute(
                store, f, params, x1, x2, config.kernel, good, method=chosen, blocks=blocks,
                rows=rows, seed=seed, tolerance=tolerance,
            )  # fmt: skip
    return VerifyReport(store.path, done, store.plan.num_blocks, tuple(checks), scope)


def _check_counts(blocks: Any, rows: Any, tolerance: Any) -> None:
    for name, value in (("blocks", blocks), ("rows", rows)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BuildInputError(f"{name} must be a positive int, got {value!r} instead.")
    if tolerance is not None and not tolerance > 0:
        raise BuildInputError(f"tolerance must be a positive number, got {tolerance!r} instead.")
