"""Markdown tables of benchmark rows (dicts), the one format every benchmark prints and writes."""
from __future__ import annotations


def cell(value, spec: str = "") -> str:
    """A value as table text: '-' for None, yes/no for booleans, `spec` for numbers (4 significant digits)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if spec:
        return format(value, spec)
    return f"{value:,.4g}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict], columns: list[tuple[str, str, str]] | None = None) -> str:
    """A markdown table of `rows`; `columns` are (header, key, format spec), default every key in first-seen order."""
    columns = columns or [(k, k, "") for k in dict.fromkeys(k for r in rows for k in r)]
    return "\n".join([f"| {' | '.join(h for h, _, _ in columns)} |", "|---" * len(columns) + "|",
                      *(f"| {' | '.join(cell(r.get(k), f) for _, k, f in columns)} |" for r in rows)])
