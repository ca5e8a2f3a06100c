"""A/B tests of subjects and from-names: who gets which variant, and which variant wins.

The split is exact and stable. Of the eligible audience, `share` percent (rounded down) test;
that test group is divided among the variants as evenly as possible (sizes differ by at most
one, the earlier variants taking the extra ones), and everyone else is the remainder, which waits
for the winner. Who lands where is random but reproducible: each recipient is ordered by a keyed
hash of the mailing and its contact, so the same audience always splits the same way, whatever
order the rows come in, and no variant gets a biased slice (such as the oldest contacts).

The winner is the variant with the best rate of the chosen metric: recipients with at least one
human open (or human click) per message handed over; machine opens and clicks (mail privacy
proxies, link scanners) do not count. Rates are compared exactly, as fractions. A tie goes to the
variant with more such recipients, then to the earlier variant (A before B).

See docs/ARCHITECTURE.md ("Sending and its invariants").
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

MIN_VARIANTS = 2
MAX_VARIANTS = 4
METRICS = ("open", "click")
LETTERS = "ABCD"


class VariantError(ValueError):
    """A test that cannot be set up as given; the message says why."""


def letter(position: int) -> str:
    return LETTERS[position] if 0 <= position < len(LETTERS) else str(position + 1)


def check_setup(variant_count: int, share: int, wait_minutes: int, metric: str) -> None:
    """Refuse a test that cannot run: 2 to 4 variants, a share of 1-100%, a wait of 0 minutes to
    30 days, metric open or click."""
    if not MIN_VARIANTS <= variant_count <= MAX_VARIANTS:
        raise VariantError(f"an A/B test needs {MIN_VARIANTS} to {MAX_VARIANTS} variants")
    if not 1 <= share <= 100:
        raise VariantError("the test share must be between 1% and 100% of the audience")
    if not 0 <= wait_minutes <= 30 * 24 * 60:
        raise VariantError("the wait must be between 0 minutes and 30 days")
    if metric not in METRICS:
        raise VariantError("the winner is chosen by open rate or click rate")


def count_tested(eligible: int, share: int) -> int:
    """How many of `eligible` recipients test at `share` percent (rounded down)."""
    return max(eligible, 0) * max(min(share, 100), 0) // 100


def group_sizes(test: int, variant_count: int) -> list[int]:
    """The test group divided as evenly as possible, earlier variants taking the extra ones."""
    base, extra = divmod(test, variant_count)
    return [base + (1 if i < extra else 0) for i in range(variant_count)]


def _order_key(seed: str, key: int) -> bytes:
    return hashlib.sha256(f"{seed}:{key}".encode()).digest()


def split(keys: Iterable[int], *, seed: str, share: int,
          variant_count: int) -> tuple[list[list[int]], list[int]]:
    """(one list of keys per variant, the remainder) for the eligible recipients' `keys`.

    Every key lands in exactly one of them. Keys should be unique (a contact id, say); the
    result depends only on the set of keys, the seed, the share and the number of variants.
    """
    if variant_count < 1:
        raise VariantError("a split needs at least one variant")
    ordered = sorted(set(keys), key=lambda k: (_order_key(seed, k), k))
    sizes = group_sizes(count_tested(len(ordered), share), variant_count)
    groups: list[list[int]] = []
    at = 0
    for size in sizes:
        groups.append(sorted(ordered[at:at + size]))
        at += size
    return groups, sorted(ordered[at:])


@dataclass(frozen=True)
class VariantFigures:
    position: int
    sent: int  # messages handed over
    opened: int  # recipients with at least one human open
    clicked: int  # recipients with at least one human click

    def count(self, metric: str) -> int:
        return self.clicked if metric == "click" else self.opened

    def rate(self, metric: str) -> Fraction:
        return Fraction(self.count(metric), self.sent) if self.sent else Fraction(0)


def winner(figures: Sequence[VariantFigures], metric: str) -> int:
    """The position of the winning variant (see the module's docstring for the tie rule)."""
    if metric not in METRICS:
        raise VariantError("the winner is chosen by open rate or click rate")
    if not figures:
        raise VariantError("no variants to choose from")
    best = max(figures, key=lambda f: (f.rate(metric), f.count(metric), -f.position))
    return best.position


def percent(value: Fraction) -> str:
    """A rate for a page: '12.5%'."""
    return f"{float(value) * 100:.1f}%"
