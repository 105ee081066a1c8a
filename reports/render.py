"""Write the report: report.md, a self-contained report.html (jinja2 template, figures inlined), tables/*.csv and
tables/*.tex.

Text blocks are the report's own words with user data (model, run and file names) marked by `name()`: markdown
escapes the marked parts, HTML escapes everything (jinja2 autoescape). CSV cells a spreadsheet would execute are
neutralised; LaTeX tables are split into parts that fit a page.
"""

from __future__ import annotations

import base64
import html
import math
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from nst_common.files import atomic_write
from reports.template import STYLE, TEMPLATE

FOLD_ROWS = 12
"""Tables longer than this are folded into <details> in report.html (and linked as CSV)."""
LATEX_TEXT_WIDTH_PT = 345.0
"""Text width of an A4 LaTeX article (10 pt); every LaTeX table part is packed to fit it."""
LATEX_CHAR_PT, LATEX_PAD_PT = 4.8, 12.0
"""Estimated width of a character in \\footnotesize (upper end, digits) and of a column's padding (2 tabcolsep)."""
LATEX_WRAP_PT = 110.0
"""Text columns wider than this wrap in a p column of this width."""
LATEX_HEADER_WRAP = 10
"""Headers longer than this many characters are stacked on several lines."""
LATEX_LONG_ROWS = 40
"""LaTeX tables with more rows than this become `longtable`s, which break across pages."""
_OPEN, _CLOSE = "\x02", "\x03"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def name(text: object) -> str:
    """Mark user data (a model, run or file name) inside a text block, so each output format escapes it."""
    return _OPEN + str(text).replace(_OPEN, "").replace(_CLOSE, "") + _CLOSE


def plain(text: str) -> str:
    """A text block without its user-data marks (for CSV and LaTeX captions)."""
    return text.replace(_OPEN, "").replace(_CLOSE, "")


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


@dataclass
class Summary:
    """The one-screen summary: a row per model, a column per key quantity, each cell value, CI and change.

    `columns`: [{"label", "direction"}]; `rows`: [{"model", "cells": [None | {"value", "ci", "change", "verdict",
    "title"}]}]; verdict is one of better, worse, unresolved, untested, baseline.
    """

    caption: str
    legend: str = ""
    columns: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)


def write_tables(tables: list[Table], out: Path) -> list[Path]:
    """Each table as tables/<name>.csv (full precision, formula-safe) and tables/<name>.tex (booktabs, rounded,
    split into parts that fit an A4 page, `latex_table`)."""
    folder = out / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for table in tables:
        frame = _with_index(table.frame)
        csv, tex = folder / f"{table.name}.csv", folder / f"{table.name}.tex"
        safe = frame.rename(columns=lambda c: neutralise(str(c))).apply(
            lambda column: column if pd.api.types.is_numeric_dtype(column) else column.map(neutralise))
        text = safe.to_csv(index=False)
        atomic_write(csv, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
        latex = latex_table(frame, plain(table.caption), f"tab:{table.name}", _key_columns(table.frame))
        atomic_write(tex, lambda tmp, latex=latex: tmp.write_text(latex, encoding="utf-8"))
        paths += [csv, tex]
    return paths


def neutralise(value: object) -> object:
    """A CSV cell a spreadsheet would run as a formula (text starting with = + - @ tab or CR that is not a plain
    number) gets a leading apostrophe (OWASP's CSV-injection advice); anything else is returned unchanged."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def latex_table(frame: pd.DataFrame, caption: str, label: str, keys: int = 1) -> str:
    """booktabs LaTeX for `frame` in parts that fit LATEX_TEXT_WIDTH_PT (A4 article text, footnotesize), each
    repeating the first `keys` columns; long text columns wrap (p columns), long headers stack, and parts with more
    than LATEX_LONG_ROWS rows are `longtable`s that break across pages. Numbers are rounded by `format_column`."""
    keys = min(keys, len(frame.columns))
    texts = {c: format_column(frame[c]) for c in frame.columns}
    specs = {c: _latex_column(str(c), texts[c], pd.api.types.is_numeric_dtype(frame[c])) for c in frame.columns}
    budget = LATEX_TEXT_WIDTH_PT - sum(specs[c][1] for c in frame.columns[:keys])
    groups: list[list] = [[]]
    for column in frame.columns[keys:]:
        if groups[-1] and sum(specs[c][1] for c in groups[-1]) + specs[column][1] > budget:
            groups.append([])
        groups[-1].append(column)
    parts = []
    for index, group in enumerate(groups, 1):
        columns = list(frame.columns[:keys]) + group
        suffix = f" (part {index} of {len(groups)})" if len(groups) > 1 else ""
        part_label = f"{label}-{index}" if len(groups) > 1 else label
        longtable = len(frame) > LATEX_LONG_ROWS
        body = pd.DataFrame({_latex_header(str(c)): [_latex_cell(t, specs[c][0]) for t in texts[c]] for c in columns},
                            index=range(len(frame)))
        latex = body.to_latex(index=False, escape=False, caption=latex_escape(caption + suffix), label=part_label,
                              longtable=longtable, column_format="".join(specs[c][0] for c in columns))
        if longtable:
            parts.append("{\\footnotesize\n" + latex + "}\n")
        else:
            parts.append(latex.replace("\\begin{table}", "\\begin{table}[htbp]\n\\footnotesize", 1))
    header = "% needs \\usepackage{booktabs} (and longtable for long tables)\n"
    return header + "\n".join(parts)


def _latex_column(header: str, cells: list[str], numeric: bool) -> tuple[str, float]:
    """Column spec and estimated width (pt) of one column: r or l at its natural width, or a wrapping p column."""
    lines = textwrap.wrap(header, LATEX_HEADER_WRAP) or [""]
    chars = max([len(x) for x in lines] + [len(t) for t in cells])
    natural = chars * LATEX_CHAR_PT + LATEX_PAD_PT
    if numeric or natural <= LATEX_WRAP_PT:
        return ("r" if numeric else "l"), natural
    return f"p{{{LATEX_WRAP_PT - LATEX_PAD_PT:.0f}pt}}", LATEX_WRAP_PT


def _latex_cell(text: str, spec: str) -> str:
    """An escaped cell; in wrapping columns, paths and dotted names may break after / _ . and ,."""
    escaped = latex_escape(text)
    if spec.startswith("p"):
        escaped = re.sub(r"(/|\\_|\.|,)(?=\S)", r"\1\\allowbreak{}", escaped)
    return escaped


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
          ">": r"\textgreater{}"}


def latex_escape(text: str) -> str:
    """Text safe in LaTeX: its special characters as commands, newlines as spaces."""
    return re.sub(r"[\\&%$#_{}~^<>]", lambda m: _LATEX[m.group()], plain(text).replace("\n", " "))


def _latex_header(text: str, width: int = LATEX_HEADER_WRAP) -> str:
    """A column header stacked on lines of about `width` characters (a nested tabular: no extra package)."""
    lines = textwrap.wrap(plain(text), width) or [""]
    if len(lines) == 1:
        return latex_escape(lines[0])
    return "\\begin{tabular}[b]{@{}c@{}}" + " \\\\ ".join(latex_escape(x) for x in lines) + "\\end{tabular}"


def write_markdown(title: str, summary: Summary, sections: list[Section], out: Path) -> Path:
    """report.md: the summary, then every section; PNG figures linked by relative path; names escaped."""
    lines = [f"# {md_escape(title)}", "", "## Summary", "", md_text(summary.caption), ""]
    if summary.rows:
        header = ["model"] + [f"{c['label']} ({c['direction']})" for c in summary.columns]
        cells = [[row["model"]] + ["" if cell is None else " ".join(
            part for part in (cell["value"], cell["ci"], cell["change"]) if part) for cell in row["cells"]]
            for row in summary.rows]
        lines += [_markdown_rows(header, cells), "", md_text(summary.legend), ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                columns, rows = display_rows(block.frame)
                lines += [f"*{md_text(block.caption)}*", "", _markdown_rows(columns, rows), ""]
            elif isinstance(block, Figure):
                lines += [f"![{md_escape(plain(block.caption))}]"
                          f"({block.stem.with_suffix('.png').relative_to(out).as_posix()})",
                          "", f"*{md_text(block.caption)}*", ""]
            else:
                lines += [md_text(block), ""]
    path = out / "report.md"
    text = "\n".join(lines)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def write_html(title: str, subtitle: str, summary: Summary, sections: list[Section], out: Path) -> Path:
    """report.html from the jinja2 template: contents, summary, sections; SVG figures embedded as data URIs
    (nothing external to load), tables longer than FOLD_ROWS folded and linked to their CSV and LaTeX files."""
    anchors: set[str] = {"top", "summary"}
    context_sections = []
    for section in sections:
        anchor = _anchor(section.title, anchors)
        blocks, entries = [], []
        for block in section.blocks:
            if isinstance(block, Table):
                columns, rows = display_rows(block.frame)
                frame = _with_index(block.frame)
                aligns = ["num" if pd.api.types.is_numeric_dtype(frame[c]) else "text" for c in frame.columns]
                csv = f"tables/{block.name}.csv"
                item = {"kind": "table", "anchor": _anchor(f"table-{block.name}", anchors),
                        "caption": html_text(block.caption), "rows": rows,
                        "columns": [{"name": c, "align": a} for c, a in zip(columns, aligns)],
                        "folded": len(rows) > FOLD_ROWS,
                        "csv": csv if (out / csv).is_file() else None,
                        "tex": f"tables/{block.name}.tex" if (out / f"tables/{block.name}.tex").is_file() else None}
                if item["folded"]:
                    entries.append({"anchor": item["anchor"], "title": "Table: " + _short(plain(block.caption))})
            elif isinstance(block, Figure):
                svg = base64.b64encode(block.stem.with_suffix(".svg").read_bytes()).decode("ascii")
                files = [block.stem.with_suffix(s).relative_to(out).as_posix() for s in (".png", ".svg")]
                item = {"kind": "figure", "anchor": _anchor(f"figure-{block.stem.name}", anchors),
                        "caption": html_text(block.caption), "src": Markup(f"data:image/svg+xml;base64,{svg}"),
                        "files": files}
                entries.append({"anchor": item["anchor"], "title": "Figure: " + _short(plain(block.caption))})
            else:
                item = {"kind": "text", "html": html_text(block)}
            blocks.append(item)
        context_sections.append({"title": section.title, "anchor": anchor, "blocks": blocks, "entries": entries})
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True)
    environment.globals["zip"] = zip
    page = environment.from_string(TEMPLATE).render(
        title=title, subtitle=plain(subtitle), style=Markup(STYLE), summary={
            "caption": html_text(summary.caption), "legend": html_text(summary.legend),
            "columns": summary.columns, "rows": summary.rows}, sections=context_sections)
    path = out / "report.html"
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


def display_rows(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Column names and cell texts of a table as shown: its index as leading columns, numbers to their precision
    (`format_column`), missing values blank."""
    frame = _with_index(frame)
    columns = [str(c) for c in frame.columns]
    texts = [format_column(frame[c]) for c in frame.columns]
    return columns, [list(row) for row in zip(*texts)] if texts else []


def format_column(column: pd.Series) -> list[str]:
    """Cell texts of one column: whole numbers without decimals, other numbers by `format_number`, blanks for
    missing values, anything else as text (floats inside text are not touched)."""
    if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
        return [_text(v) for v in column]
    values = column.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    whole = len(finite) > 0 and bool(np.all(finite == np.round(finite))) and bool(np.all(np.abs(finite) < 1e15))
    return ["" if not math.isfinite(v) else (f"{v:.0f}" if whole else format_number(v)) for v in values]


def format_number(value: float) -> str:
    """Two decimals for percentages and other values >= 1; three significant digits for small ones (p, fp)."""
    if not math.isfinite(value):
        return ""
    return f"{value:.2f}" if value == 0 or abs(value) >= 1 else f"{value:.3g}"


def md_escape(text: str) -> str:
    """Markdown-escape user data: HTML's < > & as entities, markdown punctuation backslash-escaped, newlines as
    spaces (a name must not end a table row or start a heading)."""
    text = html.escape(plain(str(text)), quote=False).replace("\r", " ").replace("\n", " ")
    return re.sub(r"([\\`*_\[\]#|~])", r"\\\1", text)


def md_text(text: str) -> str:
    """A text block in markdown: the report's own words as written, user data (`name()`) escaped."""
    pieces = re.split(f"({_OPEN}[^{_CLOSE}]*{_CLOSE})", str(text))
    return "".join(md_escape(p[1:-1]) if p.startswith(_OPEN) else p for p in pieces)


def html_text(text: str) -> Markup:
    """A text block as HTML: everything escaped; `code` spans in the report's own words become <code>."""
    pieces = re.split(f"({_OPEN}[^{_CLOSE}]*{_CLOSE})", str(text))
    parts = []
    for piece in pieces:
        if piece.startswith(_OPEN):
            parts.append(html.escape(piece[1:-1]))
        else:
            parts.append(re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(piece)))
    return Markup("".join(parts))


def _key_columns(frame: pd.DataFrame) -> int:
    """How many leading columns name a row (the index levels, else the leading text columns, at least one)."""
    if not (isinstance(frame.index, pd.RangeIndex) and frame.index.name is None):
        return frame.index.nlevels
    count = 0
    for column in frame.columns:
        if pd.api.types.is_numeric_dtype(frame[column]) or count >= 2:
            break
        count += 1
    return max(count, 1)


def _with_index(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with a meaningful index turned into leading columns, and no leftover column-axis name."""
    frame = frame.rename_axis(columns=None)
    if isinstance(frame.index, pd.RangeIndex) and frame.index.name is None:
        return frame
    return frame.reset_index()


def _markdown_rows(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return format_number(float(value))
    return plain(str(value))


def _anchor(text: str, taken: set[str]) -> str:
    """A unique, URL-safe id for `text`."""
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "part"
    anchor, index = base, 2
    while anchor in taken:
        anchor, index = f"{base}-{index}", index + 1
    taken.add(anchor)
    return anchor


def _short(text: str, most: int = 60) -> str:
    """A contents entry from a caption: its first clause, shortened at a word boundary."""
    text = re.sub(r"\s*\([^()]*\)", "", text)
    first = re.split(r"[.;:,]\s", text + " ")[0].strip().rstrip(".")
    return textwrap.shorten(first, most, placeholder=" ...")
