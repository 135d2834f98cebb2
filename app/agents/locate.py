"""Where each key of a TOML document is written: ``{("agents", "sales", "greeting"): 12}``.

The standard library's ``tomllib`` (and ``tomlkit``) give values but no positions, and a config
error that names no line sends the operator hunting. TOML's line structure is simple enough to
scan: table headers, ``key = value`` lines (keys may be dotted or quoted), and values that span
lines only inside ``[...]``/``{...}`` or triple-quoted strings. This scanner runs on documents
``tomllib`` already accepted, so it never has to diagnose bad syntax.
"""

from __future__ import annotations

Path = tuple[str, ...]


def key_lines(text: str) -> dict[Path, int]:
    """First line (1-based) of every table header and key, by its full dotted path."""
    lines: dict[Path, int] = {}
    table: Path = ()
    depth = 0  # open brackets/braces of a value spanning lines
    closing: str | None = None  # the triple quote that ends a multi-line string
    for number, line in enumerate(text.splitlines(), start=1):
        if closing is not None:
            end = line.find(closing)
            if end < 0:
                continue
            closing = None
            rest = line[end + 3 :]
            depth, closing = _scan_value(rest, depth)
            continue
        if depth > 0:
            depth, closing = _scan_value(line, depth)
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            array = stripped.startswith("[[")
            inner = stripped[2:] if array else stripped[1:]
            end = _find_unquoted(inner, "]")
            table = tuple(_split_key(inner[:end]))
            for i in range(1, len(table) + 1):  # a header defines its parent tables too
                lines.setdefault(table[:i], number)
            continue
        eq = _find_unquoted(stripped, "=")
        if eq < 0:
            continue
        path = table + tuple(_split_key(stripped[:eq]))
        lines.setdefault(path, number)
        for i in range(len(table) + 1, len(path)):  # a dotted key defines its parents
            lines.setdefault(path[:i], number)
        depth, closing = _scan_value(stripped[eq + 1 :], 0)
    return lines


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of ``path``, or of its nearest written ancestor (a missing key's table)."""
    for end in range(len(path), 0, -1):
        found = lines.get(path[:end])
        if found is not None:
            return found
    return None


def _split_key(raw: str) -> list[str]:
    parts: list[str] = []
    current = ""
    quote: str | None = None
    for ch in raw.strip():
        if quote:
            if ch == quote:
                quote = None
            else:
                current += ch
        elif ch in "\"'":
            quote = ch
        elif ch == ".":
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return parts


def _find_unquoted(text: str, target: str) -> int:
    quote: str | None = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == target:
            return i
    return -1


def _scan_value(text: str, depth: int) -> tuple[int, str | None]:
    """Bracket depth after ``text``, and the open triple quote if a string continues."""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "#":
            break
        if text.startswith(('"""', "'''"), i):
            delim = text[i : i + 3]
            end = text.find(delim, i + 3)
            if end < 0:
                return depth, delim
            i = end + 3
            continue
        if ch in "\"'":
            end = i + 1
            while end < len(text) and text[end] != ch:
                end += 2 if ch == '"' and text[end] == "\\" else 1
            i = end + 1
            continue
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        i += 1
    return max(depth, 0), None
