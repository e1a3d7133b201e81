"""The report as a list of blocks (headings, paragraphs, tables, figures), rendered three ways:
Markdown (`report.md`), self-contained HTML (`report.html`) and LaTeX (tables for the paper).

Cells and sentences are plain Unicode text; each renderer escapes for its own format, so the
numbers in all three outputs come from one string.
"""

from __future__ import annotations

import base64
import html
import re
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


NARROW = 6  # columns: a table this narrow fits the page at 8 pt with every column it has


@dataclass
class Table:
    name: str  # file stem of its .tex
    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    legend: str = ""  # how to read the statistics columns: long, so the paper states it once instead
    compact: list[str] | None = None  # the columns a page-wide (paper) version keeps; None: all
    column_notes: dict[str, str] = field(default_factory=dict)  # what a column means, shown while it is

    @property
    def captions(self) -> list[str]:
        explained = " ".join(note for column, note in self.column_notes.items() if column in self.columns)
        return [*([explained] if explained else []), *self.notes, *([self.legend] if self.legend else [])]

    def select(self, columns: list[str]) -> Table:
        """The table with only `columns` (in their original order), and only those columns' notes."""
        keep = [i for i, c in enumerate(self.columns) if c in columns]
        return Table(self.name, self.title, [self.columns[i] for i in keep], [[r[i] for i in keep] for r in self.rows],
                     self.notes, self.legend, column_notes=self.column_notes)

    def constants_in_caption(self) -> Table:
        """The table without the columns that hold one value in every row, stated once in the caption instead
        (a narrower table keeps its type legible in print). A table that fits anyway (at most NARROW columns,
        such as the criteria with their marks) or has one row is returned as it is."""
        if len(self.rows) < 2 or len(self.columns) <= NARROW:
            return self
        constant = [i for i, c in enumerate(self.columns) if len({row[i] for row in self.rows}) == 1]
        if not constant:
            return self
        short = self.select([c for i, c in enumerate(self.columns) if i not in constant])
        said = "Same in every row — " + "; ".join(f"{self.columns[i]}: {self.rows[0][i]}" for i in constant) + "."
        return replace(short, notes=[said, *short.notes])


@dataclass
class Figure:
    name: str  # file stem of its .png and .pdf
    title: str
    caption: str
    png: Path
    pdf: Path
    width: float  # inches, as saved: a page shows it at this size, or shrunk to fit, never enlarged


Block = Heading | Paragraph | Bullets | Table | Figure


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


# Unicode that LaTeX's default fonts lack, as math or text commands.
_LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "ρ": r"$\rho$", "×": r"$\times$", "≥": r"$\geq$",
                  "≤": r"$\leq$", "·": r"$\cdot$", "—": "---", "–": "--", "−": "$-$", "≈": r"$\approx$",
                  "<": "$<$", ">": "$>$", "→": r"$\rightarrow$", "γ": r"$\gamma$", "λ": r"$\lambda$",
                  "α": r"$\alpha$", "…": r"\ldots{}", "↑": r"$\uparrow$", "✗": r"$\times$", "’": "'", "“": "``", "”": "''"}
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "|": r"\textbar{}"}  # the default font sets a plain | as an em dash


def latex_text(text: str) -> str:
    """Plain text → LaTeX: specials escaped, symbols as math, a number's minus sign as a real minus."""
    escaped = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    escaped = re.sub(r"(?<![\w.])-(?=\d)", "$-$", escaped)
    escaped = re.sub(r"(?<=[A-Za-z])\+(?=[A-Za-z])", r"+\\allowbreak{}", escaped)  # a+b+c: one long word to TeX
    return "".join(_LATEX_SYMBOLS.get(ch, ch if ch.isascii() else _ascii(ch)) for ch in escaped)


def _ascii(ch: str) -> str:
    """Other non-ASCII (e.g. an accent in a user's label): its ASCII base letter, else '?', so that
    pdflatex never stops on an unknown character."""
    return unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode() or "?"


def _markdown_cell(text: str) -> str:
    return text.replace("|", r"\|")


def table_markdown(table: Table) -> str:
    lines = ["| " + " | ".join(map(_markdown_cell, table.columns)) + " |",
             "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(map(_markdown_cell, row)) + " |" for row in table.rows]
    return "\n".join(lines)


WRAP_AT = 40  # characters: a column with a longer cell wraps instead of widening the table


def _stacked(header: str, width: int, align: str) -> str:
    """A header longer than its column's cells, on two lines (split at the space nearest its middle), so
    that a column of short numbers is not as wide as its name."""
    spaces = [i for i, c in enumerate(header) if c == " "]
    if len(header) <= width or not spaces:
        return latex_text(header)
    cut = min(spaces, key=lambda i: abs(2 * i - len(header)))
    lines = (latex_text(header[:cut]), latex_text(header[cut + 1:]))
    return rf"\begin{{tabular}}[b]{{@{{}}{align}@{{}}}}{lines[0]}\\{lines[1]}\end{{tabular}}"


FONT = r"\footnotesize"  # 9 pt in the paper's 11 pt text: no table is shrunk below it (no \resizebox, \tiny)
# Measured with pdflatex (\settowidth on the paper's tables at 9 pt): a character of these cells sets about 4.6 pt
# wide, so the 6.5 in (468 pt) text width holds about 101 and the 9 in height (sideways) about 140.
PORTRAIT, LANDSCAPE = 100, 138
TABCOLSEP = "4pt"  # half the space between two columns (LaTeX's default is 6 pt): narrower tables, same type
_COLUMN_GAP = 2  # characters: the space between two columns (2 \tabcolsep = 8 pt)


def _visible(text: str) -> int:
    """About how many characters wide `text` sets (math symbols count as one)."""
    return len(text)


def _header_width(name: str, cell: int) -> int:
    """A header's width: on one line where it is no longer than the column's cells, else stacked on two lines
    as `_stacked` splits it (the longer line counts)."""
    spaces = [i for i, c in enumerate(name) if c == " "]
    if _visible(name) <= cell or not spaces:
        return _visible(name)
    cut = min(spaces, key=lambda i: abs(2 * i - len(name)))
    return max(_visible(name[:cut]), _visible(name[cut + 1:]))


def _natural(table: Table, i: int) -> int:
    """Column `i`'s width in characters: its widest cell or its header, at most WRAP_AT (longer text wraps)."""
    cell = max((_visible(row[i]) for row in table.rows), default=0)
    return min(max(cell, _header_width(table.columns[i], cell)), WRAP_AT)


def _narrowest(table: Table, i: int) -> int:
    """Column `i`'s width when it wraps: its longest word (a wrapped column never breaks a word)."""
    words = [w for text in [table.columns[i], *(row[i] for row in table.rows)] for w in text.split()]
    return max((_visible(w) for w in words), default=0)


def table_width(table: Table, wraps: list[bool] | None = None) -> int:
    """The table's width in characters at `FONT`: every column as wide as its widest cell or its header
    (stacked on two lines where that helps, as `table_latex` does), plus the gaps between columns. A column
    with text longer than WRAP_AT counts at WRAP_AT; a column in `wraps` at its longest word."""
    wraps = wraps or [False] * len(table.columns)
    return sum((_narrowest(table, i) if wrap else _natural(table, i)) + _COLUMN_GAP
               for i, wrap in enumerate(wraps))


def _text_columns(table: Table) -> list[int]:
    """Columns of words: the two lead columns, and any with a letter in every cell, such as the verdict (not a
    column of numbers and intervals, whose reference row may say '(reference)')."""
    return [i for i in range(len(table.columns))
            if i < 2 or all(any(ch.isalpha() for ch in row[i]) for row in table.rows)]


def _fitting_wraps(table: Table, cells: list[int], page: int) -> list[bool]:
    """Which columns wrap: those with text longer than WRAP_AT, then, while the table is wider than `page`,
    its text columns, the widest first, each down to its longest word."""
    wraps = [max(len(name), w) > WRAP_AT for name, w in zip(table.columns, cells)]
    for i in sorted(_text_columns(table) if table.rows else [], key=lambda i: -cells[i]):
        if table_width(table, wraps) <= page:
            break
        if _narrowest(table, i) < _natural(table, i):
            wraps[i] = True
    return wraps


def table_latex(table: Table, label: str | None = None) -> str:
    """A `table` float with booktabs rules at 9 pt (`FONT`), never smaller. Text columns wrap where the table
    is wider than the page (the widest first, and never inside a word), the table then set to the text width
    (tabularx). A table too wide for the page upright even so is set sideways on its own page
    (`sidewaystable`, package rotating), wrapping its text columns there as far as it must."""
    cells = [max((len(row[i]) for row in table.rows), default=0) for i in range(len(table.columns))]
    wraps = _fitting_wraps(table, cells, PORTRAIT)
    sideways = table_width(table, wraps) > PORTRAIT
    if sideways:
        wraps = _fitting_wraps(table, cells, LANDSCAPE)
    aligns = ["l" if i < 2 else "r" for i in range(len(table.columns))]
    spec = "".join(r">{\raggedright\arraybackslash}X" if wrap else align for wrap, align in zip(wraps, aligns))
    headers = [latex_text(c) if wrap else _stacked(c, w, align)
               for c, wrap, w, align in zip(table.columns, wraps, cells, aligns)]
    body = [" & ".join(headers) + r" \\", r"\midrule"]
    body += [" & ".join(latex_text(c) for c in row) + r" \\" for row in table.rows]
    caption = latex_text(". ".join([table.title, *(n.rstrip(".") for n in table.captions)]) + ".")
    if any(wraps):
        begin, end = rf"\begin{{tabularx}}{{\linewidth}}{{{spec}}}", r"\end{tabularx}"
    else:
        begin, end = rf"\begin{{tabular}}{{{spec}}}", r"\end{tabular}"
    environment = "sidewaystable" if sideways else "table"
    return "\n".join([
        # a caption above the table needs space below it (LaTeX's default is none), local to this float
        rf"\begin{{{environment}}}" + ("" if sideways else "[htbp]"), r"\centering", FONT,
        r"\setlength{\belowcaptionskip}{4pt}", rf"\setlength{{\tabcolsep}}{{{TABCOLSEP}}}",
        rf"\caption{{{caption}}}" + (rf"\label{{{label}}}" if label else ""),
        begin, r"\toprule", *body, r"\bottomrule", end, rf"\end{{{environment}}}", "",
    ])


def render_markdown(blocks: list[Block], base: Path) -> str:
    """Markdown with figures linked relative to `base` (the report folder)."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            out.append(block.text)
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            out.append(f"**{block.title}**\n\n{table_markdown(block)}"
                       + "".join(f"\n\n_{note}_" for note in block.captions))
        else:
            png, pdf = block.png.relative_to(base).as_posix(), block.pdf.relative_to(base).as_posix()
            out.append(f"![{block.title}]({png})\n\n*{block.title}.* {block.caption} ([PDF]({pdf}))")
    return "\n\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.85em}th,td{border:1px solid #bbb;padding:.25em .5em}
th{background:#f0f0f0}td{text-align:right}td:nth-child(-n+2){text-align:left}
figure{margin:1em 0}img{max-width:100%;height:auto}figcaption,.note{font-size:.9em;color:#444}"""


def render_html(blocks: list[Block], title: str) -> str:
    """One self-contained page: figures embedded as base64 PNG, no external resources."""
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body>"]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            out.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(c)}</th>" for c in block.columns)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in block.captions)
            out.append(f"<p><b>{html.escape(block.title)}</b></p><table><thead><tr>{head}</tr></thead>"
                       f"<tbody>{rows}</tbody></table>{notes}")
        else:
            data = base64.b64encode(block.png.read_bytes()).decode("ascii")
            out.append(f"<figure><img alt='{html.escape(block.title)}' src='data:image/png;base64,{data}'>"
                       f"<figcaption><b>{html.escape(block.title)}.</b> {html.escape(block.caption)}</figcaption>"
                       "</figure>")
    out.append("</body></html>")
    return "\n".join(out)
