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
    # per-row cells the report says otherwise (in a note, or by its legend's rule) and the paper shows as columns
    # (see balora.report.paper): column name → one cell per row
    detail: dict[str, list[str]] = field(default_factory=dict)

    @property
    def captions(self) -> list[str]:
        # a note several columns share (each phase of a cost table) is said once
        explained = " ".join(dict.fromkeys(note for column, note in self.column_notes.items() if column in self.columns))
        return [*([explained] if explained else []), *self.notes, *([self.legend] if self.legend else [])]

    def select(self, columns: list[str]) -> Table:
        """The table with only `columns` (in their original order), and only those columns' notes."""
        keep = [i for i, c in enumerate(self.columns) if c in columns]
        return Table(self.name, self.title, [self.columns[i] for i in keep], [[r[i] for i in keep] for r in self.rows],
                     self.notes, self.legend, column_notes=self.column_notes, detail=self.detail)

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
        # what a value said once means: its column's note, which the shown columns' notes no longer include
        meant = dict.fromkeys(self.column_notes[c] for i in constant if (c := self.columns[i]) in self.column_notes)
        return replace(short, notes=[said, *meant, *short.notes])


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
    # a line break followed by [ would read it as the break's optional length: an empty group between them
    gap = "{}" if lines[1].startswith("[") else ""
    return rf"\begin{{tabular}}[b]{{@{{}}{align}@{{}}}}{lines[0]}\\{gap}{lines[1]}\end{{tabular}}"


FONT = r"\footnotesize"  # 9 pt in the paper's 11 pt text: the report's tables are never shrunk below it
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


def _text_columns(table: Table, fit: bool = False) -> list[int]:
    """Columns of words: the two lead columns, and any with a letter in every cell, such as the verdict (not a
    column of numbers and intervals, whose reference row may say '(reference)'); with `fit`, in every cell but
    those that hold no value (a dash, as the reference row's verdict may)."""
    def worded(cell: str) -> bool:
        return any(ch.isalpha() for ch in cell) or (fit and cell.strip() in ("—", "–", "-"))

    return [i for i in range(len(table.columns)) if i < 2 or all(worded(row[i]) for row in table.rows)]


def _fitting_wraps(table: Table, cells: list[int], page: int, fit: bool = False) -> list[bool]:
    """Which columns wrap: those with text longer than WRAP_AT, then, while the table is wider than `page`,
    its text columns (`_text_columns`), the widest first, each down to its longest word."""
    wraps = [max(len(name), w) > WRAP_AT for name, w in zip(table.columns, cells)]
    for i in sorted(_text_columns(table, fit) if table.rows else [], key=lambda i: -cells[i]):
        if table_width(table, wraps) <= page:
            break
        if _narrowest(table, i) < _natural(table, i):
            wraps[i] = True
    return wraps


def _header_cells(table: Table, wraps: list[bool], cells: list[int], aligns: list[str]) -> list[str]:
    return [latex_text(c) if wrap else _stacked(c, w, align)
            for c, wrap, w, align in zip(table.columns, wraps, cells, aligns)]


def _caption(table: Table) -> str:
    return latex_text(". ".join([table.title, *(n.rstrip(".") for n in table.captions)]) + ".")


# where a float may go, every table's and figure's alike: here, at the top or foot of a page, or on a page of floats
# (tried for the paper: top and float pages only left most appendix pages with one float each, and a subsection of
# floats alone after its heading)
PLACEMENT = "htbp"
LEAST_SCALE = 8 / 9  # a table may be shrunk to fit the page upright down to 8 pt type, never below


def _layout(table: Table, fit: bool) -> tuple[list[bool], float, bool]:
    """How `table_latex` sets `table`: which columns wrap, the scale (1, or with `fit` down to LEAST_SCALE where
    the table is that little too wide for the page upright) and whether it goes sideways even so."""
    cells = [max((len(row[i]) for row in table.rows), default=0) for i in range(len(table.columns))]
    wraps = _fitting_wraps(table, cells, PORTRAIT, fit)
    width = table_width(table, wraps)
    if width <= PORTRAIT:
        return wraps, 1.0, False
    if fit and width * LEAST_SCALE <= PORTRAIT:
        return wraps, PORTRAIT / width, False
    return _fitting_wraps(table, cells, LANDSCAPE), 1.0, True


def fits_upright(table: Table, fit: bool = False) -> bool:
    """Whether `table_latex` sets `table` upright on the page (with `fit`, as the paper does)."""
    return not _layout(table, fit)[2]


def table_latex(table: Table, label: str | None = None, fit: bool = False) -> str:
    """A `table` float with booktabs rules at 9 pt (`FONT`). Text columns wrap where the table is wider than the
    page (the widest first, and never inside a word), the table then set to the text width (tabularx). With
    `fit` (the paper's tables, read in print), a text column may have dashes for no value and wrap as well, and a
    table still a little too wide is scaled to the text width, its type no smaller than 8 pt (`LEAST_SCALE`);
    without, the report's tables are never set smaller than 9 pt. A table too wide for the page upright even so is
    set sideways on its own page (`sidewaystable`, package rotating), wrapping its text columns there as far as it
    must."""
    cells = [max((len(row[i]) for row in table.rows), default=0) for i in range(len(table.columns))]
    wraps, scale, sideways = _layout(table, fit)
    aligns = ["l" if i < 2 else "r" for i in range(len(table.columns))]
    spec = "".join(r">{\raggedright\arraybackslash}X" if wrap else align for wrap, align in zip(wraps, aligns))
    body = [" & ".join(_header_cells(table, wraps, cells, aligns)) + r" \\", r"\midrule"]
    # rows of several lines (a wrapped cell) apart, so that each reads as one row, not as part of its neighbour
    gap = r" \addlinespace[3pt]" if any(wraps) else ""
    body += [" & ".join(latex_text(c) for c in row) + r" \\" + (gap if at < len(table.rows) - 1 else "")
             for at, row in enumerate(table.rows)]
    width = rf"{1 / scale:.3f}\linewidth" if scale < 1 else r"\linewidth"  # what the scaling brings to the page
    if any(wraps):
        begin, end = rf"\begin{{tabularx}}{{{width}}}{{{spec}}}", r"\end{tabularx}"
    else:
        begin, end = rf"\begin{{tabular}}{{{spec}}}", r"\end{tabular}"
    if scale < 1:
        begin, end = r"\resizebox{\linewidth}{!}{" + begin, end + "}"
    environment = "sidewaystable" if sideways else "table"
    return "\n".join([
        # a caption above the table needs space below it (LaTeX's default is none), local to this float
        rf"\begin{{{environment}}}" + ("" if sideways else f"[{PLACEMENT}]"), r"\centering", FONT,
        r"\setlength{\belowcaptionskip}{4pt}", rf"\setlength{{\tabcolsep}}{{{TABCOLSEP}}}",
        rf"\caption{{{_caption(table)}}}" + (rf"\label{{{label}}}" if label else ""),
        begin, r"\toprule", *body, r"\bottomrule", end, rf"\end{{{environment}}}", "",
    ])


# lines of a page that a float may fill at `FONT` (a page holds about 58): its caption, header, rules, each group's
# heading (with the space above it) and each row's lines
FLOAT_LINES = 54


def _wrapped_lines(text: str, width: float) -> int:
    """How many lines `text` takes, wrapped at word boundaries into `width` characters."""
    lines, used = 1, 0
    for word in text.split():
        if used and used + 1 + _visible(word) > width:
            lines, used = lines + 1, _visible(word)
        else:
            used += (1 if used else 0) + _visible(word)
    return lines


def listing_latex(table: Table, label: str | None = None) -> str:
    """A table whose first column groups its rows (the setting), at `FONT` across the text width: each group's value
    once, as a heading over its rows, instead of in every row. One that fits a page (`FLOAT_LINES`) is a float, kept
    whole; a longer one a `longtable` (package longtable), on as many pages as its rows need (its header repeated on
    each), where a float taller than the page would run off its bottom. Text columns wrap as in `table_latex`, into
    fixed widths (longtable has no tabularx) that share the width the other columns leave."""
    inner = table.select(table.columns[1:])
    cells = [max((len(row[i]) for row in inner.rows), default=0) for i in range(len(inner.columns))]
    wraps = _fitting_wraps(inner, cells, PORTRAIT, fit=True)
    words = _text_columns(inner, fit=True)  # left-aligned, as the lead columns are (a selection reads as text)
    aligns = ["l" if i in words else "r" for i in range(len(inner.columns))]
    fixed = sum(_natural(inner, i) for i, wrap in enumerate(wraps) if not wrap) + _COLUMN_GAP * len(wraps)
    wrapped = sum(_natural(inner, i) for i, wrap in enumerate(wraps) if wrap)
    # each wrapped column's share of the text width the others leave, by its natural width (5% to spare: the
    # character widths are estimates)
    share = [0.95 * (PORTRAIT - fixed) * _natural(inner, i) / wrapped / PORTRAIT if wrap else 0.0
             for i, wrap in enumerate(wraps)]
    spec = "".join(rf">{{\raggedright\arraybackslash}}p{{{width:.3f}\linewidth}}" if wrap else align
                   for wrap, align, width in zip(wraps, aligns, share))
    span = len(inner.columns)
    header = " & ".join(_header_cells(inner, wraps, cells, aligns)) + r" \\"
    body = []
    for at, (group, row) in enumerate(zip((r[0] for r in table.rows), inner.rows)):
        if at == 0 or group != table.rows[at - 1][0]:
            heading = rf"\multicolumn{{{span}}}{{@{{}}>{{\raggedright\arraybackslash}}p{{\linewidth}}@{{}}}}"
            body += [*([r"\addlinespace"] if at else []), heading + rf"{{\emph{{{latex_text(group)}}}}} \\*"]
        body.append(" & ".join(latex_text(c) for c in row) + r" \\")
    caption = rf"\caption{{{_caption(table)}}}" + (rf"\label{{{label}}}" if label else "")
    groups = sum(at == 0 or group != table.rows[at - 1][0] for at, group in enumerate(r[0] for r in table.rows))
    # a row is as many lines as its most wrapped cell takes in its column's width (a long method name: 2 or 3)
    lines = sum(max([_wrapped_lines(c, share[i] * PORTRAIT) for i, c in enumerate(row) if wraps[i]], default=1)
                for row in inner.rows)
    if _wrapped_lines(_caption(table), PORTRAIT) + 3 + 1.5 * groups + lines <= FLOAT_LINES:
        return "\n".join([
            rf"\begin{{table}}[{PLACEMENT}]", r"\centering", FONT, r"\setlength{\belowcaptionskip}{4pt}",
            rf"\setlength{{\tabcolsep}}{{{TABCOLSEP}}}", caption,
            rf"\begin{{tabular*}}{{\linewidth}}{{@{{\extracolsep{{\fill}}}}{spec}}}", r"\toprule", header, r"\midrule",
            *body, r"\bottomrule", r"\end{tabular*}", r"\end{table}", ""])
    continued = rf"\multicolumn{{{span}}}{{@{{}}l}}{{\emph{{Table \thetable{{}} continued}}}} \\"
    return "\n".join([
        # the floats before it first (package placeins): a longtable is set where it stands, and would otherwise be
        # numbered before floats printed after it
        r"\FloatBarrier", r"\begingroup", FONT, rf"\setlength{{\tabcolsep}}{{{TABCOLSEP}}}", r"\setlength{\LTcapwidth}{\linewidth}",
        r"\setlength{\LTleft}{0pt}", r"\setlength{\LTright}{0pt}",
        rf"\begin{{longtable}}{{@{{\extracolsep{{\fill}}}}{spec}}}",
        caption + r" \\",
        r"\toprule", header, r"\midrule", r"\endfirsthead",
        continued, r"\toprule", header, r"\midrule", r"\endhead",
        r"\bottomrule", r"\endlastfoot",
        *body, r"\end{longtable}", r"\endgroup", "",
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
