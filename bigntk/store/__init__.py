"""The kernel store: bigntk's on-disk format, and nothing else (no Ray, no JAX).

A store is one Zarr v3 group per build (see :mod:`bigntk.store._layout`). Readers
use :class:`KernelStore` and :func:`open_kernel`; a build writes through
:class:`StoreWriter`, under the path's writer lease (:func:`writer_lease`).
Format 3 (new stores) keeps each pair of examples of a symmetric kernel once (the
upper blocks, and the diagonal blocks packed); :func:`mirror_lower_blocks` writes
the rest for raw Zarr readers.
"""

from bigntk.store._checksum import ScanResult as ScanResult
from bigntk.store._checksum import checksum as checksum
from bigntk.store._checksum import repair as repair
from bigntk.store._checksum import report as report
from bigntk.store._checksum import scan as scan
from bigntk.store._layout import FORMAT_VERSION as FORMAT_VERSION
from bigntk.store._layout import READABLE_FORMATS as READABLE_FORMATS
from bigntk.store._layout import Plan as Plan
from bigntk.store._layout import mirror_permutation as mirror_permutation
from bigntk.store._layout import stored_entries as stored_entries
from bigntk.store._lease import describe as describe_lease
from bigntk.store._mirror import mirror_lower_blocks as mirror_lower_blocks
from bigntk.store._paths import has_partial_files as has_partial_files
from bigntk.store._paths import remove_partial_files as remove_partial_files
from bigntk.store._reader import KernelStore as KernelStore
from bigntk.store._reader import open_kernel as open_kernel
from bigntk.store._resume import differences as differences
from bigntk.store._resume import probe_difference as probe_difference
from bigntk.store._resume import probe_tolerance as probe_tolerance
from bigntk.store._resume import why_not_resumable as why_not_resumable
from bigntk.store._symmetric import SymmetricArray as SymmetricArray
from bigntk.store._urls import forwarded_env as forwarded_env
from bigntk.store._urls import is_url as is_url
from bigntk.store._urls import protocol as protocol
from bigntk.store._urls import source_urls as source_urls
from bigntk.store._writer import StoreWriter as StoreWriter
from bigntk.store._writer import check_not_foreign as check_not_foreign
from bigntk.store._writer import spec_hash as spec_hash
from bigntk.store._writer_lease import WriterLease as WriterLease
from bigntk.store._writer_lease import holder as lease_holder
from bigntk.store._writer_lease import writer_lease as writer_lease

__all__ = [
    "FORMAT_VERSION",
    "KernelStore",
    "Plan",
    "READABLE_FORMATS",
    "ScanResult",
    "StoreWriter",
    "SymmetricArray",
    "WriterLease",
    "check_not_foreign",
    "checksum",
    "describe_lease",
    "differences",
    "forwarded_env",
    "has_partial_files",
    "is_url",
    "lease_holder",
    "mirror_lower_blocks",
    "mirror_permutation",
    "open_kernel",
    "probe_difference",
    "probe_tolerance",
    "protocol",
    "remove_partial_files",
    "repair",
    "report",
    "scan",
    "source_urls",
    "spec_hash",
    "stored_entries",
    "why_not_resumable",
    "writer_lease",
]
