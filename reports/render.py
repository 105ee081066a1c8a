"""Write the report: report.md, a self-contained report.html (figures inlined), tables/*.csv and tables/*.tex."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.85rem; }
th, td { border: 1px solid #bbb; padding: 0.2rem 0.5rem; text-align: right; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1rem 0; } figure img { max-width: 100%; } figcaption { font-size: 0.85rem; color: #444; }
.note { color: #555; font-size: 0.9rem; }
"""


@dataclass(frozen=True)
class Table:
    """A named table: written to tables/<name>.csv and .tex, shown in the report."""

    name: str
    frame: pd.DataFrame
    caption: str


@dataclass(frozen=True)
class Figure:
    """A figure already saved as <stem>.png and <stem>.svg."""

    stem: Path
    caption: str


Block = str | Table | Figure


@dataclass(frozen=True)
class Section:
    """A report section: a title and its paragraphs, tables and figures in order."""

    title: str
    blocks: list[Block]


def write_tables(tables: list[Table], out: Path) -> list[Path]:
    """Each table as tables/<name>.csv (full precision) and tables/<name>.tex (booktabs, rounded)."""
    folder = out / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for table in tables:
        frame = _with_index(table.frame)
        csv, tex = folder / f"{table.name}.csv", folder / f"{table.name}.tex"
        frame.to_csv(csv, index=False)
        tex.write_text(frame.to_latex(index=False, escape=True, float_format=format_number, na_rep="",
                                      caption=table.caption, label=f"tab:{table.name}"), encoding="utf-8")
        paths += [csv, tex]
    return paths


def write_markdown(title: str, sections: list[Section], out: Path) -> Path:
    """report.md, linking the PNG figures by relative path."""
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                lines += [f"*{block.caption}*", "", _markdown_table(block.frame), ""]
            elif isinstance(block, Figure):
                lines += [f"![{block.caption}]({block.stem.with_suffix('.png').relative_to(out).as_posix()})",
                          "", f"*{block.caption}*", ""]
            else:
                lines += [block, ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_html(title: str, sections: list[Section], out: Path) -> Path:
    """report.html with inline CSS and the SVG figures embedded as data URIs: nothing external to load."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Table):
                parts.append(f"<p class='note'>{html.escape(block.caption)}</p>")
                parts.append(_with_index(block.frame).to_html(index=False, na_rep="", float_format=format_number,
                                                              border=0))
            elif isinstance(block, Figure):
                svg = base64.b64encode(block.stem.with_suffix(".svg").read_bytes()).decode("ascii")
                parts.append(f"<figure><img alt='{html.escape(block.caption)}' "
                             f"src='data:image/svg+xml;base64,{svg}'>"
                             f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
            else:
                parts.append(f"<p>{html.escape(block)}</p>")
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def format_number(value: float) -> str:
    """Two decimals for percentages and other values >= 1; three significant digits for small ones (p, fp)."""
    return f"{value:.2f}" if value == 0 or abs(value) >= 1 else f"{value:.3g}"


def _with_index(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with a meaningful index turned into leading columns."""
    if isinstance(frame.index, pd.RangeIndex) and frame.index.name is None:
        return frame
    return frame.reset_index()


def _markdown_table(frame: pd.DataFrame) -> str:
    frame = _with_index(frame)
    header = [str(c) for c in frame.columns]
    rows = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    text = format_number(value) if isinstance(value, float) else str(value)
    return text.replace("|", "\\|")
