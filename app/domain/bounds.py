"""Numbers an admin or the environment may set: parsed strictly and kept inside a stated range.

A sending setting of `inf`, NaN or 2^31 does not fail where it is typed; it fails later, in a
worker, and leaves a mailing stuck. So every numeric setting has a kind (whole number or decimal)
and a range, and a value outside it is refused with a message naming the setting and its range.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# Plain decimal notation only: no inf/nan spellings, no hex, no digit-group underscores.
_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Longer text is refused before conversion (int() of a huge digit string is slow or refused).
MAX_TEXT = 40


class OutOfBounds(ValueError):
    """A value was refused; str() is a sentence for the person who typed it."""


def format_number(value: float) -> str:
    """A bound as people write it: 20,000 and 0.5, never 2e+04."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.6f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class Bound:
    """The kind (int or float) and inclusive range of one numeric setting."""

    kind: type
    minimum: float
    maximum: float

    @property
    def whole(self) -> bool:
        return self.kind is int

    def describe(self) -> str:
        what = "a whole number" if self.whole else "a number"
        return f"{what} from {format_number(self.minimum)} to {format_number(self.maximum)}"

    def parse(self, raw: object, label: str) -> int | float:
        """The value of `raw` (text as typed, or a number) if it is of the right kind and in range.

        Surrounding spaces are ignored; anything else that is not a plain finite number in range
        raises OutOfBounds with a message naming `label` and the range.
        """
        refused = OutOfBounds(f"{label}: {_shown(raw)} is not allowed; enter {self.describe()}.")
        value: int | float
        if isinstance(raw, bool):
            raise refused
        if isinstance(raw, int):
            value = raw
        elif isinstance(raw, float):
            if not math.isfinite(raw):
                raise refused
            if self.whole:
                if not raw.is_integer():
                    raise refused
                value = int(raw)
            else:
                value = raw
        elif isinstance(raw, str):
            text = raw.strip()
            if not text or len(text) > MAX_TEXT:
                raise refused
            if self.whole:
                if not _INT_RE.fullmatch(text):
                    raise refused
                value = int(text)
            else:
                if not _FLOAT_RE.fullmatch(text):
                    raise refused
                value = float(text)
                if not math.isfinite(value):  # 1e400
                    raise refused
        else:
            raise refused
        if not self.minimum <= value <= self.maximum:
            raise refused
        if not self.whole:
            value = float(value) + 0.0  # an int in range becomes a float; -0.0 becomes 0.0
        return value


def _shown(raw: object) -> str:
    """The refused value as the message quotes it (shortened, never the empty string)."""
    if isinstance(raw, str):
        text = raw.strip()
        if not text:
            return "an empty value"
        if len(text) > MAX_TEXT:
            text = text[:MAX_TEXT] + "…"
        return f'"{text}"'
    return f'"{raw}"'
