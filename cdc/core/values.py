"""Column values the server stored but their column type cannot give as themselves.

MariaDB/MySQL in a non-strict sql_mode (WordPress sets one) store what strict mode would refuse:
bytes that are not valid in a text column's character set (encoded surrogates `ED A0 80` in utf8mb4)
and dates with a zero month or day (`2024-00-15 10:00:00`). The decoders hand such a value on as a
`RawValue` instead of failing the whole rows event or turning it into null; the mapper publishes its
`text` and names the column in the event's `column_warnings`.
"""

from __future__ import annotations

from dataclasses import dataclass

INVALID_TEXT = "invalid_text"  # not valid in the column's character set: each bad byte became U+FFFD
INVALID_DATE = "invalid_date"  # a date no calendar has (zero month or day, year 0): the server's text


@dataclass(frozen=True, slots=True)
class RawValue:
    text: str  # what the event carries for this column
    problem: str  # INVALID_TEXT or INVALID_DATE
    raw: bytes | None = None  # the stored bytes of an INVALID_TEXT value (for dead letters)


def invalid_text(raw: bytes, encoding: str) -> RawValue:
    return RawValue(raw.decode(encoding, "replace"), INVALID_TEXT, raw)


def invalid_datetime(
    year: int, month: int, day: int, hour: int, minute: int, second: int, micro: int, fsp: int
) -> RawValue | None:
    """The server's own text of a DATETIME Python cannot hold; None for the all-zero date
    (0000-00-00 00:00:00, WordPress's "no date"), which stays null as before."""
    if not (year or month or day or hour or minute or second or micro):
        return None
    text = f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}"
    if fsp:
        text += "." + f"{micro:06d}"[:fsp]
    return RawValue(text, INVALID_DATE)


def invalid_date(year: int, month: int, day: int) -> RawValue | None:
    if not (year or month or day):
        return None
    return RawValue(f"{year:04d}-{month:02d}-{day:02d}", INVALID_DATE)
