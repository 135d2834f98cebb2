"""Campaign contacts from CSV: a phone column plus any per-contact prompt variables. Pure.

Every bad row is reported with its line number and reason; none is dropped silently. Reasons
hold no phone digits, so they can be logged.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Collection
from dataclasses import dataclass, field

from app.campaigns.policy import timezones_for
from app.outbound.numbers import NumberRefused, normalise
from app.store.campaigns import NewContact

PHONE_COLUMNS = ("phone", "phone_number", "number", "to", "mobile")
MAX_ROWS = 100_000
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    reason: str


@dataclass(slots=True)
class CsvImport:
    contacts: list[NewContact] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.contacts)


def parse_contacts(
    text: str,
    *,
    allowed_countries: Collection[str],
    default_region: str | None,
    fallback_timezone: str = "UTC",
) -> CsvImport:
    result = CsvImport()
    if text.startswith("\ufeff"):  # a BOM from spreadsheet exports
        text = text[1:]
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        result.errors.append(RowError(1, "the file is empty"))
        return result
    except csv.Error as exc:
        result.errors.append(RowError(1, f"unreadable header: {exc}"))
        return result
    names = [h.strip() for h in header]
    lowered = [n.lower() for n in names]
    phone_col = next((lowered.index(c) for c in PHONE_COLUMNS if c in lowered), None)
    if phone_col is None:
        result.errors.append(
            RowError(1, f"no phone column (one of: {', '.join(PHONE_COLUMNS)})")
        )
        return result
    bad_names = [n for i, n in enumerate(names) if i != phone_col and not _VAR_NAME.match(n)]
    if bad_names:
        result.errors.append(
            RowError(1, "column names must be letters, digits and _: " + ", ".join(bad_names))
        )
        return result
    seen: dict[str, int] = {}
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.errors.append(RowError(reader.line_num, f"unreadable row: {exc}"))
            break
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # a blank line is not a contact
        if len(result.contacts) + len(result.errors) >= MAX_ROWS:
            result.errors.append(RowError(line, f"more than {MAX_ROWS} rows"))
            break
        if len(row) != len(names):
            result.errors.append(
                RowError(line, f"expected {len(names)} columns, found {len(row)}")
            )
            continue
        try:
            number = normalise(row[phone_col], allowed_countries, default_region)
        except NumberRefused as exc:
            result.errors.append(RowError(line, exc.reason))
            continue
        if number.e164 in seen:
            result.errors.append(RowError(line, f"duplicate of line {seen[number.e164]}"))
            continue
        seen[number.e164] = line
        variables = {
            names[i]: cell.strip() for i, cell in enumerate(row) if i != phone_col
        }
        result.contacts.append(
            NewContact(
                line=line,
                phone=number.e164,
                timezones=timezones_for(number.e164, fallback_timezone),
                variables=variables,
            )
        )
    if not result.contacts and not result.errors:
        result.errors.append(RowError(line, "no contacts in the file"))
    return result
