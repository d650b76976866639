"""HTML pieces of the report: embedded PNGs, tables and the page around them.

Kept apart from the plotting so that the page layout can change without
touching a single figure, and so a PNG is embedded from exactly the bytes
written beside it (what MLflow logs is what the reader saw).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from granvae.report.tables import fmt

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
tr.best td { background: #fff7cc; font-weight: bold; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
.note { background: #eef4ff; border-left: 4px solid #4a78c2; padding: 0.5em 1em; }
.warn { background: #fff0f0; border-left: 4px solid #c24a4a; padding: 0.5em 1em; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
"""


def embed_png(png: bytes, alt: str) -> str:
    """An <img> whose source is the PNG itself (base64 data URI): the page stands alone."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def note(text: str, kind: str = "note") -> str:
    return f'<p class="{kind}">{html.escape(text)}</p>'


def preformatted(text: str) -> str:
    """Markdown tables (decision.md) read fine as-is in a monospace block."""
    return f"<pre>{html.escape(text)}</pre>"


def heading(text: str, level: int = 2) -> str:
    return f"<h{level}>{html.escape(text)}</h{level}>"


def _cell(value: object) -> str:
    if isinstance(value, float | np.floating) and not math.isnan(value) and 0 < abs(value) < 1e-3:
        return f"{value:.2e}"
    return html.escape(fmt(value))


def html_table(rows: pd.DataFrame, highlight: str | None = None) -> str:
    """A plain table; the row whose candidate_id equals `highlight` is marked."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in rows.columns)
    body = []
    for _, row in rows.iterrows():
        cls = ' class="best"' if highlight and row.get("candidate_id") == highlight else ""
        cells = "".join(f"<td>{_cell(v)}</td>" for v in row.tolist())
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def records_table(records: Iterable[dict]) -> str:
    return html_table(pd.DataFrame(list(records)))


def page(title: str, sections: list[str]) -> str:
    """The whole self-contained document: inline CSS, inline images, no external links."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
