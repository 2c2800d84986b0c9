"""The kernel store: one Zarr v3 group per build.

Layout::

    <path>/                     group; attrs["bigntk"]: format, spec, spec_hash, versions, timings
    <path>/ntk, <path>/nngp     (n1, n2, *out) (diagonal builds: (n, *out)); chunk = one block;
                                fill NaN; dimension_names set (xarray.open_zarr works)
    <path>/manifest             uint8 (grid rows, grid cols): 1 = block committed

Commit protocol: a worker writes every chunk of a block (and of its mirror),
then the driver — and only the driver — marks it in the manifest. A crash in
between costs that block a recomputation, never a wrong value. Manifest
commits are batched and rewrite only the manifest chunks that changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import time
from typing import Any

import numpy as np
import zarr

from bigntk.build._checksum import PREFIX as CHECKSUM_PREFIX
from bigntk.build._checksum import ChecksumTable, checksum
from bigntk.build._identity import probe_difference, probe_tolerance
from bigntk.build._plan import Plan
from bigntk.errors import NotAStoreError, SpecMismatchError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest"
_MANIFEST_CHUNK = 512
_LEASE_NAME = "bigntk.lease"  # manifest/bigntk.lease*: the writer lease (see _lease)


def spec_hash(spec: dict) -> str:
    """A stable hash of a JSON-able build spec."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _is_local(path: str) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


def _local_path(path: str) -> pathlib.Path:
    return pathlib.Path(str(path).removeprefix("file://"))


def remove_partial_files(path: str) -> int:
    """Delete orphan ``*.partial`` files a killed writer left in a local store."""
    if not _is_local(path):
        return 0
    count = 0
    for root, _, files in os.walk(_local_path(path)):
        for name in files:
            if ".partial" in name:
                os.remove(os.path.join(root, name))
                count += 1
    if count:
        logger.info("Removed %d orphan temporary files from %s.", count, path)
    return count


def mirror_permutation(dims: list[str]) -> tuple[int, ...]:
    """Axis permutation turning a block of K(x1, x2) into the block of K(x2, x1).

    Paired dims (``x1``/``x2``, ``out{k}_1``/``out{k}_2``) swap places.
    """
    perm = list(range(len(dims)))
    index = {d: i for i, d in enumerate(dims)}
    for i, d in enumerate(dims):
        partner = "x2" if d == "x1" else d[:-2] + "_2" if d.endswith("_1") else None
        if partner is not None:
            j = index[partner]
            perm[i], perm[j] = j, i
    return tuple(perm)


class KernelStore:
    """A bigntk kernel store (see the module docstring for its layout)."""

    def __init__(self, group: zarr.Group, path: str):
        self.group = group
        self.path = str(path)
        meta = dict(group.attrs)["bigntk"]
        self.spec: dict = meta["spec"]
        self.spec_hash: str = meta["spec_hash"]
        layout = self.spec["layout"]
        self.kinds: tuple[str, ...] = tuple(self.spec["kinds"])
        self.dims: list[str] = list(layout["dims"])
        self.plan = Plan(
            layout["n1"], layout["n2"], layout["block"], layout["symmetric"], layout["diagonal"]
        )
        self._arrays = {kind: group[kind] for kind in self.kinds}
        self._manifest = group[MANIFEST]
        self._mirror = mirror_permutation(self.dims)
        self.checksums = ChecksumTable(group, self.kinds, self.plan.grid, self._manifest.chunks)
        self.commit_guard: Any = None  # called before each commit (the writer lease's check)

    # --- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, mode: str = "r") -> KernelStore:
        """Open an existing store; raise :class:`NotAStoreError` if it is not one."""
        if not (_local_path(path).exists() if _is_local(path) else _path_exists(path)):
            raise FileNotFoundError(f"No kernel store at {path}: the path does not exist.")
        try:
            # bigntk writes Zarr v3 only; v3 metadata is JSON and names no code to run
            group = zarr.open_group(str(path), mode=mode, zarr_format=3)
        except Exception as e:  # zarr raises several types for "not a group"
            raise NotAStoreError(
                f"{path} exists but is not a bigntk kernel store (not a Zarr group: {e})."
            ) from None
        if "bigntk" not in dict(group.attrs):
            raise NotAStoreError(
                f"{path} is a Zarr group but not a bigntk kernel store (no 'bigntk' attributes)."
            )
        version = dict(group.attrs)["bigntk"].get("format")
        if version != FORMAT_VERSION:
            raise NotAStoreError(
                f"{path} is a bigntk store of format {version}; this bigntk reads format "
                f"{FORMAT_VERSION}. Rebuild it, or open it with the bigntk version that made it."
            )
        return cls(group, path)

    @classmethod
    def create_or_resume(
        cls,
        path: str,
        spec: dict,
        *,
        overwrite: bool = False,
        versions: dict | None = None,
        probe: dict | None = None,
    ) -> tuple[KernelStore, bool]:
        """Create the store, or reopen one made by the same computation.

        The same spec resumes, once the ``probe`` (a few kernel entries, see
        ``_identity``) agrees with the stored one to its tolerance. A JAX or
        jaxlib upgrade may print the same model's program differently: a store
        whose spec differs *only* in the model's program, made with other JAX
        versions, resumes when the probe agrees, and the change is recorded in
        its attributes (``version_changes``); with the same versions, a changed
        program is another model. Any other difference refuses, or with
        ``overwrite`` replaces the store (only a bigntk store is ever replaced,
        and the writer lease held at its path survives the replacement).

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
        store = cls.open(path, mode="r+") if _store_exists(path) else None
        if store is not None:
            why = store._why_not_resumable(spec, digest, versions, probe)
            if why is None:
                remove_partial_files(path)
                return store, True
            if not overwrite:
                raise SpecMismatchError(why)
            _remove_store(store)
        return cls._create(path, spec, digest, versions, probe), False

    def _why_not_resumable(
        self, spec: dict, digest: str, versions: dict, probe: dict | None
    ) -> str | None:
        """None when ``spec`` (with ``probe``) may resume this store; else the refusal."""
        meta = self.meta
        if "spec_version" in spec and "spec_version" not in self.spec:
            return (
                f"The kernel store at {self.path} was made by an earlier bigntk whose "
                "fingerprints could not tell models apart (by name and bytecode) and sampled "
                "64 rows of the data, so it cannot be shown to hold this computation. Nothing "
                "was overwritten. Use another path, or pass overwrite=True (--overwrite) to "
                "rebuild it."
            )
        changed = _differences(self.spec, spec)
        upgraded = {k: (meta.get("versions", {}).get(k), versions.get(k)) for k in _JAX}
        upgraded = {k: v for k, v in upgraded.items() if v[0] != v[1] and v[1] is not None}
        if changed and changed != ["model.program"]:
            return _mismatch_message(self.path, changed, self.spec, spec)
        if changed and not upgraded:
            return (
                f"The kernel store at {self.path} was made by another model: its program "
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
                    f"The kernel store at {self.path} holds other values than this build "
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
                "attributes (version_changes).", self.path, _describe_upgrade(upgraded),
                " (the model's program prints differently)" if changed else "", difference,
            )  # fmt: skip
            updates: dict[str, Any] = {
                "version_changes": [*meta.get("version_changes", []), record],
                "versions": {**meta.get("versions", {}), **versions},
            }
            if changed:
                updates.update(spec=spec, spec_hash=digest)
                self.spec, self.spec_hash = spec, digest
            self.update_meta(**updates)
        return None

    @classmethod
    def _create(
        cls, path: str, spec: dict, digest: str, versions: dict, probe: dict | None
    ) -> KernelStore:
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
                compressors=None,
            )
        grid = plan.grid
        group.create_array(
            MANIFEST,
            shape=grid,
            chunks=(min(grid[0], _MANIFEST_CHUNK), min(grid[1], _MANIFEST_CHUNK)),
            dtype="uint8",
            fill_value=0,
            dimension_names=["block_row", "block_col"],
        )
        ChecksumTable.create(group, spec["kinds"], grid, group[MANIFEST].chunks)
        group.attrs["bigntk"] = {
            "format": FORMAT_VERSION,
            "spec": spec,
            "spec_hash": digest,
            "versions": versions,
            "timings": {},
            **({"probe": probe} if probe is not None else {}),
        }
        return cls(group, path)

    # --- data -----------------------------------------------------------------------------

    def array(self, kind: str) -> zarr.Array:
        return self._arrays[kind]

    def write_block(self, bi: int, bj: int, values: dict[str, np.ndarray]) -> dict[str, int]:
        """Write one computed block (cropped) of every kind, and its mirror if symmetric.

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
            arr[r0:r1, c0:c1] = block
            parts = [block]
            if self.plan.symmetric and bi != bj:
                parts.append(np.transpose(block, self._mirror))
                arr[c0:c1, r0:r1] = parts[1]
            sums[kind] = checksum(*parts, dtype=arr.dtype)
        return sums

    def symmetrize(self, block: np.ndarray) -> np.ndarray:
        """An exactly symmetric diagonal block: ``(K + Kᵀ) / 2`` (Kᵀ: the mirror)."""
        return (block + np.transpose(block, self._mirror)) / block.dtype.type(2)

    # --- manifest (driver only) -----------------------------------------------------------

    def committed(self) -> np.ndarray:
        """Boolean grid of committed blocks."""
        return self._manifest[...].astype(bool)

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

    @property
    def meta(self) -> dict:
        return dict(self.group.attrs)["bigntk"]


_JAX = ("jax", "jaxlib")


def _describe_upgrade(upgraded: dict) -> str:
    return ", ".join(f"{k} {a} -> {b}" for k, (a, b) in upgraded.items())


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the entries where two specs differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def _path_exists(path: str) -> bool:
    if _is_local(path):
        p = _local_path(path)
        return p.exists() and (p.is_file() or any(p.iterdir()))
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(path))
    return fs.exists(root)


def _store_exists(path: str) -> bool:
    """A bigntk store (its group metadata) is at ``path``."""
    return _path_exists(path) and _entries(path) != [] and "zarr.json" in _entries(path)


def _entries(path: str) -> list[str]:
    """Top-level names under ``path`` ([] for a file or nothing)."""
    if _is_local(path):
        p = _local_path(path)
        return sorted(e.name for e in p.iterdir()) if p.is_dir() else []
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(path))
    if not fs.isdir(root):
        return []
    return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(root, detail=False))


def _lease_only(path: str) -> bool:
    """Only the writer lease is at ``path``: a store being created (or whose creator died)."""
    if _entries(path) != [MANIFEST]:
        return False
    if _is_local(path):
        names = [e.name for e in (_local_path(path) / MANIFEST).iterdir()]
    else:
        import fsspec

        fs, root = fsspec.core.url_to_fs(str(path))
        names = [e.rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(f"{root}/{MANIFEST}")]
    return all(n.startswith(_LEASE_NAME) for n in names)


def path_exists(path: str) -> bool:
    """Something (a file, a non-empty folder, an object prefix) is at ``path``."""
    return _path_exists(path)


def creatable(path: str) -> bool:
    """Nothing is at ``path``, or only a writer lease: a store may be created there."""
    return not _path_exists(path) or _lease_only(path)


def remove_empty_folders(path: str) -> None:
    """Remove ``path`` and the folders under it if they hold no file (local paths only)."""
    if not _is_local(path) or not _local_path(path).is_dir():
        return
    root = _local_path(path)
    for folder, _, _ in sorted(os.walk(root), reverse=True):
        if not os.listdir(folder):
            os.rmdir(folder)


def check_not_foreign(path: str) -> None:
    """Refuse a path holding anything but a bigntk store (or nothing, or only its lease).

    Raises:
        NotAStoreError: naming what is there; nothing at ``path`` is touched.
    """
    if creatable(path):
        return
    KernelStore.open(path)  # raises NotAStoreError naming what it is
    foreign = [e for e in _entries(path) if e not in _store_names(path)]
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
    return {"zarr.json", MANIFEST, *kinds, *(CHECKSUM_PREFIX + k for k in kinds)}


def _remove_store(store: KernelStore) -> None:
    """Delete every key of ``store`` except its writer lease (held by this driver)."""
    from zarr.core.sync import sync

    zstore = store.group.store_path.store
    root = store.group.store_path.path

    async def keys() -> list[str]:
        return [k async for k in zstore.list_prefix(root)]

    for key in sync(keys()):
        relative = key[len(root) :].lstrip("/") if root else key
        if not relative.startswith(f"{MANIFEST}/{_LEASE_NAME}"):
            sync(zstore.delete(key))
    remove_empty_folders(store.path)  # left by the deleted chunks (the lease's stays)


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
