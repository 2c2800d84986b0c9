"""``KernelSettings``: how every block of one build is computed, and the spec that names it.

The driver makes one :class:`KernelSettings` per build (canonical axes, the
proved batch axes, the block size), hands it to the scheduler and from there
to every worker's :class:`~bigntk.build._compute.BlockKernel`; the store's
build spec is written from it by :meth:`KernelSettings.spec`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bigntk.build._spec import SPEC_VERSION, canonical_vmap_axes
from bigntk.empirical import NtkImplementation, as_implementation


@dataclasses.dataclass(frozen=True)
class KernelSettings:
    """The kernel settings of one build (the arguments of its workers' ``BlockKernel``).

    Attributes:
        kinds: kernels to compute, in the canonical order (``bigntk.build.KINDS``).
        trace_axes, diagonal_axes: canonical output axes (sorted, non-negative).
        vmap_axes: the batch axes, proved or asserted (never None).
        implementation: the NTK implementation; AUTO until the build decides it.
        block: rows and columns per block.
        diagonal: the batch axis is a diagonal axis (blocks are ``(rows, *out)``).
    """

    kinds: tuple[str, ...]
    trace_axes: tuple[int, ...]
    diagonal_axes: tuple[int, ...]
    vmap_axes: Any
    implementation: NtkImplementation
    block: int
    diagonal: bool

    def __post_init__(self):
        object.__setattr__(self, "implementation", as_implementation(self.implementation))

    @property
    def auto(self) -> bool:
        """Whether the implementation is still AUTO (to be decided once per store)."""
        return self.implementation == NtkImplementation.AUTO

    def decided(self, implementation: Any) -> KernelSettings:
        """These settings with AUTO replaced by ``implementation``."""
        return dataclasses.replace(self, implementation=as_implementation(implementation))

    def spec(self, layout: dict, model: dict, data: tuple[str, str | None]) -> dict:
        """The store's build spec (JSON): these settings, ``layout``, ``model`` and ``data``.

        Key order and values are those every existing store was written with, so that
        its spec (and hash) compare equal and the store resumes.
        """
        return {
            "spec_version": SPEC_VERSION,
            "kinds": list(self.kinds),
            "trace_axes": list(self.trace_axes),
            "diagonal_axes": list(self.diagonal_axes),
            "vmap_axes": canonical_vmap_axes(self.vmap_axes),
            "implementation": int(self.implementation),
            "layout": layout,
            "model": model,
            "x1": data[0],
            "x2": data[1],
        }
