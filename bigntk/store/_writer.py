"""Writing a kernel store: creating it, resuming it, writing blocks, committing them.

Commit protocol: a worker writes every chunk of a block (and, format 1, of its mirror),
then the driver — and only the driver — marks it in the manifest. A crash in
between costs that block a recomputation, never a wrong value. Manifest
commits are batched and rewrite only the manifest chunks that changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import numpy as np
import zarr

from bigntk.errors import NotAStoreError, SpecMismatchError
from bigntk.store._checksum import PREFIX as CHECKSUM_PREFIX
from bigntk.store._checksum import ChecksumTable, checksum
from bigntk.store._layout import (
    FORMAT_VERSION,
    LEASE_KEY,
    MANIFEST,
    MANIFEST_CHUNK,
    READABLE_FORMATS,
    SOLVE_FOLDER,
    Plan,
    packs_diagonal,
)
from bigntk.store._packed import PACKED_PREFIX, pack, packed_length
from bigntk.store._paths import (
    creatable,
    entries,
    path_exists,
    remove_empty_folders,
    remove_partial_files,
)
from bigntk.store._reader import KernelStore
from bigntk.store._resume import why_not_resumable

logger = logging.getLogger(__name__)


def spec_hash(spec: dict) -> str:
    """A stable hash of a JSON-able build spec."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class StoreWriter(KernelStore):
    """A kernel store opened for writing: what a build (its driver and workers) does to it."""

    _MODE = "r+"

    def __init__(self, group: zarr.Group, path: str):
        super().__init__(group, path)
        self.commit_guard: Any = None  # called before each commit (the writer lease's check)

    @classmethod
    def create_or_resume(
        cls,
        path: str,
        spec: dict,
        *,
        overwrite: bool = False,
        versions: dict | None = None,
        probe: dict | None = None,
        format_version: int = FORMAT_VERSION,
    ) -> tuple[StoreWriter, bool]:
        """Create the store, or reopen one made by the same computation.

        Whether a store may be resumed is decided by ``_resume.why_not_resumable``
        (the same spec and an agreeing probe, or a recorded JAX upgrade). With
        ``overwrite``, a bigntk store made by another computation is replaced;
        the writer lease held at its path survives the replacement. Only a
        bigntk store is ever replaced. A resumed store keeps its format;
        ``format_version`` (1, 2 or 3) is that of a new store (1 and 2: for tests
        and compatibility only).

        Returns:
            ``(store, resumed)``.

        Raises:
            NotAStoreError: ``path`` holds something other than a bigntk store.
            SpecMismatchError: the store was made by another computation (and not
                ``overwrite``).
        """
        versions = versions or {}
        digest = spec_hash(spec)
        check_not_foreign(path)
        store = cls.open(path) if _store_exists(path) else None
        if store is not None:
            why = why_not_resumable(store, spec, digest, versions, probe)
            if why is None:
                remove_partial_files(path)
                return store, True
            if not overwrite:
                raise SpecMismatchError(why)
            _remove_store(store)
        return cls._create(path, spec, digest, versions, probe, format_version), False

    @classmethod
    def _create(
        cls, path: str, spec: dict, digest: str, versions: dict, probe: dict | None, version: int
    ) -> StoreWriter:
        if version not in READABLE_FORMATS:
            raise ValueError(f"format_version must be one of {READABLE_FORMATS}, got {version}.")
        layout = spec["layout"]
        plan = Plan(
            layout["n1"], layout["n2"], layout["block"], layout["symmetric"], layout["diagonal"]
        )
        # "a", not "w": never clear the path (this driver's writer lease is there)
        group = zarr.open_group(str(path), mode="a", zarr_format=3)
        lead = (layout["n1"],) if plan.diagonal else (layout["n1"], layout["n2"])
        chunk_lead = (plan.block,) if plan.diagonal else (plan.block, plan.block)
        out = tuple(layout["out_shape"])
        for kind in spec["kinds"]:
            group.create_array(
                kind,
                shape=lead + out,
                chunks=chunk_lead + out,
                dtype=layout["dtype"],
                fill_value=float("nan"),
                dimension_names=layout["dims"],
                compressors=chunk_codecs(version),
            )
        if packs_diagonal(version, plan):
            for kind in spec["kinds"]:
                group.create_array(
                    PACKED_PREFIX + kind,
                    shape=(plan.grid[0], packed_length(plan.block), *out),
                    chunks=(1, packed_length(plan.block), *out),
                    dtype=layout["dtype"],
                    fill_value=float("nan"),
                    dimension_names=["block", "pair", *layout["dims"][2:]],
                    compressors=chunk_codecs(version),
                )
        grid = plan.grid
        group.create_array(
            MANIFEST,
            shape=grid,
            chunks=(min(grid[0], MANIFEST_CHUNK), min(grid[1], MANIFEST_CHUNK)),
            dtype="uint8",
            fill_value=0,
            dimension_names=["block_row", "block_col"],
        )
        ChecksumTable.create(group, spec["kinds"], grid, group[MANIFEST].chunks)
        group.attrs["bigntk"] = {
            "format": version,
            "spec": spec,
            "spec_hash": digest,
            "versions": versions,
            "timings": {},
            **({"probe": probe} if probe is not None else {}),
        }
        return cls(group, path)

    def write_block(self, bi: int, bj: int, values: dict[str, np.ndarray]) -> dict[str, int]:
        """Write one computed block (cropped) of every kind (format 1 symmetric: and its mirror;
        format 3: a diagonal block packed, see ``_packed``).

        Returns the CRC-32 of what was written, per kind (see ``_checksum``).
        """
        r0, r1 = self.plan.rows(bi)
        c0, c1 = self.plan.cols(bj)
        sums = {}
        for kind, block in values.items():
            arr = self._arrays[kind]
            if self.plan.diagonal:
                arr[r0:r1] = block
                sums[kind] = checksum(block, dtype=arr.dtype)
                continue
            if self.packed and bi == bj:
                pairs = pack(block)
                self._packed[kind][bi, : len(pairs)] = pairs
                sums[kind] = checksum(pairs, dtype=arr.dtype)
                continue
            arr[r0:r1, c0:c1] = block
            parts = [block]
            if self.mirrored and bi != bj:
                parts.append(np.transpose(block, self._mirror))
                arr[c0:c1, r0:r1] = parts[1]
            sums[kind] = checksum(*parts, dtype=arr.dtype)
        return sums

    def symmetrize(self, block: np.ndarray) -> np.ndarray:
        """An exactly symmetric diagonal block: ``(K + Kᵀ) / 2`` (Kᵀ: the mirror)."""
        return (block + np.transpose(block, self._mirror)) / block.dtype.type(2)

    # --- manifest (driver only) -----------------------------------------------------------

    def commit(self, blocks: np.ndarray, done: np.ndarray) -> None:
        """Record ``blocks`` (``(k, 2)``) as committed; ``done`` is the driver's full grid.

        Only the manifest chunks containing these blocks are rewritten.
        """
        if len(blocks) == 0:
            return
        if self.commit_guard is not None:
            self.commit_guard()  # raises if this driver lost the store's writer lease
        self.checksums.flush(blocks)  # before the manifest marks the blocks committed
        c = np.asarray(self._manifest.chunks)
        for ci, cj in {tuple(b) for b in (np.asarray(blocks) // c)}:
            r0, r1 = ci * c[0], min((ci + 1) * c[0], done.shape[0])
            s0, s1 = cj * c[1], min((cj + 1) * c[1], done.shape[1])
            self._manifest[r0:r1, s0:s1] = done[r0:r1, s0:s1].astype(np.uint8)

    def update_meta(self, **entries: Any) -> None:
        """Merge entries (e.g. ``timings``) into the store's ``bigntk`` attributes."""
        meta = dict(self.group.attrs)["bigntk"]
        for key, value in entries.items():
            if isinstance(meta.get(key), dict) and isinstance(value, dict):
                meta[key] = {**meta[key], **value}
            else:
                meta[key] = value
        self.group.attrs["bigntk"] = meta


def chunk_codecs(version: int) -> list:
    """The bytes-to-bytes codecs of a kernel array: formats 2-3 end each chunk with a CRC32C."""
    if version < 2:
        return []
    from zarr.codecs import Crc32cCodec

    return [Crc32cCodec()]


def _store_exists(path: str) -> bool:
    """A bigntk store (its group metadata) is at ``path``."""
    return path_exists(path) and entries(path) != [] and "zarr.json" in entries(path)


def check_not_foreign(path: str) -> None:
    """Refuse a path holding anything but a bigntk store (or nothing, or only its lease).

    Raises:
        NotAStoreError: naming what is there; nothing at ``path`` is touched.
    """
    if creatable(path):
        return
    KernelStore.open(path)  # raises NotAStoreError naming what it is
    foreign = [e for e in entries(path) if e not in _store_names(path)]
    if foreign:
        raise NotAStoreError(
            f"{path} holds a bigntk kernel store and other entries ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}). bigntk replaces or resumes only a path "
            "that holds its own store and nothing else; move those entries out first. Nothing "
            "was touched."
        )


def _store_names(path: str) -> set[str]:
    meta = KernelStore.open(path).meta
    kinds = meta["spec"]["kinds"]
    names = {"zarr.json", MANIFEST, SOLVE_FOLDER, *kinds}
    return names | {prefix + k for k in kinds for prefix in (CHECKSUM_PREFIX, PACKED_PREFIX)}


def _remove_store(store: StoreWriter) -> None:
    """Delete every key of ``store`` except its writer lease (held by this driver)."""
    from zarr.core.sync import sync

    zstore = store.group.store_path.store
    root = store.group.store_path.path

    async def keys() -> list[str]:
        return [k async for k in zstore.list_prefix(root)]

    for key in sync(keys()):
        relative = key[len(root) :].lstrip("/") if root else key
        if not relative.startswith(LEASE_KEY):
            sync(zstore.delete(key))
    remove_empty_folders(store.path)  # left by the deleted chunks (the lease's stays)
