"""Text for messages, shared by every package: typo suggestions and byte sizes."""

from __future__ import annotations

from collections.abc import Sequence
from difflib import SequenceMatcher, get_close_matches


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``; whole bytes below 1 KiB."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    for unit in units:
        if abs(n) < 1024 or unit == units[-1]:
            break
        n /= 1024
    return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"


def _edits(a: str, b: str) -> int:
    """Edit distance with transpositions (optimal string alignment)."""
    prev2, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def closest(word: str, choices: Sequence[str]) -> str | None:
    """The valid name a typo most likely meant: fewest edits (a swap is one), else difflib's."""
    if not choices:
        return None
    scored = sorted(
        choices,
        key=lambda c: (_edits(word.lower(), c.lower()), -SequenceMatcher(None, word, c).ratio()),
    )
    best = scored[0]
    if _edits(word.lower(), best.lower()) <= max(1, len(word) // 3):
        return best
    close = get_close_matches(word, choices, n=1)
    return close[0] if close else None
