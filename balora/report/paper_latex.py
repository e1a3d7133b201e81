"""How the paper typesets a part: its claims (`Cited`: a claim with the tables and figures that hold its numbers),
its tables at print size (`table_tex`: compact columns, the CI level in the header, the values the rows differ in
said once) and its figures, each written under the source's folder (`Output`)."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from balora.report import anytime, figures, selection
from balora.report.document import NARROW, PLACEMENT, Figure, Table, fits_upright, latex_text, listing_latex, table_latex
from balora.report.paper_setup import margin_fixed, method_option
from balora.report.runs import OPTION_WORDS, listed, named_labels
from balora.report.tables import CI_LEVEL, COST_NOTE, DASH, DIFFERENCES, LEVER, LEVERS_NOTE, MARGIN_NOTE, MARGIN_SOURCE, grouped

CONTENTION = (f"{COST_NOTE} A time ratio thus measures the machine's load during the runs as well as the method, "
              "and one below 1 is no speed-up.")
# the columns whose notes NOTATION gives, or the selection protocol just above the selection tables (Appendix B):
# the captions no longer repeat them; nor the anytime tables' speed columns, said once above those tables (`speed_columns`)
EXPLAINED_ONCE = ("≤ majority", "Verdict", "Selected", f"{selection.REJECTED} Not admissible", *anytime.SPEED_NOTES)
# the paper's tables: the headers it abbreviates (said under each table that has them), the mark on a value selected
# on validation (as in the selection table), the config field that lists those, and the CI level's column
ABBREVIATED = ("learning_rate",)  # fields the tables name by an abbreviation (`selection.FIELD_NAMES`)
SELECTED, TUNED, CI_LEVEL_HEADER = "*", "tuned", "CI level"
# what the appendix's tables of values say they are, where a source has any (`_with_fields`)
VALUES_LEAD = (r"\paragraph{Values the rows differ in.} Where a results table has no room for them as columns, the "
               "values its rows differ in, such as the learning rate each arm selected, are listed here.\n")
TEXT_WIDTH = figures.TEXT_WIDTH  # inches: main.tex's letter paper with 1 in margins
FIGURE_HEIGHT = 0.75  # of the text height: the tallest a figure prints, its caption below it on the page


@dataclass(frozen=True)
class Output:
    """Where a source's parts go: `folder` on disk, and `tex`, the same folder as main.tex names it."""

    folder: Path
    tex: str
    study: str = ""
    appendix: list[str] = field(default_factory=list)  # tables for the appendix's part "values", as written
    selection: str = ""  # the name of the table of values selected on validation, where the paper shows one

    def reference(self, name: str) -> str:
        """A mark, in a table's plain-text note, that `table_tex` turns into a reference to table `name`."""
        return f"[[{self.label(name)}]]"

    def label(self, name: str) -> str:
        """A float's label, unique in the paper: a study's floats may share names with the main results'."""
        return f"{self.study}/{name}" if self.study else name


def _own_runs_only(notes: list[str], study: str) -> bool:
    """Whether every run of a study's table is the study's own (its margin note names the sweeps of its runs,
    `tables.margin_note`): its margin was then fixed before them, whatever runs the study imports elsewhere."""
    source = next((note for note in notes if note.startswith(MARGIN_SOURCE)), "")
    found = re.search(r"runs are from sweeps? (.+)\)\.$", source)
    return bool(study and found) and found.group(1).split(", ") == [study]


def figure_tex(figure: Figure, out: Output) -> str:
    (out.folder / "figures").mkdir(exist_ok=True)
    if figures.RENDER.get():  # else only the text is being written
        shutil.copy(figure.pdf, out.folder / "figures" / figure.pdf.name)
    # natural size where it fits (so every figure's text is the same size), else shrunk to the page
    size = (rf"width={min(1.0, figure.width / TEXT_WIDTH):.3f}\linewidth,height={FIGURE_HEIGHT}\textheight,"
            "keepaspectratio")
    return "\n".join([
        rf"\begin{{figure}}[{PLACEMENT}]", r"\centering", rf"\includegraphics[{size}]{{{out.tex}/figures/{figure.pdf.name}}}",
        rf"\caption{{{latex_text(named_labels(figure.title))}. {latex_text(named_labels(figure.caption))}}}"
        rf"\label{{fig:{out.label(figure.name)}}}",
        r"\end{figure}", ""])


def _with_levels(table: Table) -> Table:
    """`table` with each row's CI level (`Table.detail`) after the interval's column, or, where every interval has
    one level, that level in the column's header; the interval's column then says, in a note, why its level is the
    one it is."""
    levels = table.detail.get(CI_LEVEL, [])
    tested = sorted({level for level in levels if level != DASH})
    interval = next((c for c in table.columns if c.endswith("[CI]")), None)
    if interval is None or not tested:
        return table
    columns, rows, column_notes = list(table.columns), [list(row) for row in table.rows], dict(table.column_notes)
    if len(tested) == 1:  # one level: the header says it
        header = f"{interval.removesuffix('[CI]')}[{tested[0]}% CI]"
        columns[columns.index(interval)] = header
        column_notes = {header if name == interval else name: note for name, note in column_notes.items()}
    else:
        after = columns.index(interval) + 1
        columns.insert(after, CI_LEVEL_HEADER)
        for row, level in zip(rows, levels):
            row.insert(after, level if level == DASH else f"{level}%")
    return replace(table, columns=columns, rows=rows, column_notes=column_notes)


def _with_fields(table: Table, out: Output) -> tuple[Table, Table | None]:
    """`table` with the fields its rows differ in (`Table.detail`) said once. Where the paper has a selection table
    (`Output.selection`): the training length, which a reader must know to compare the rows, as a column after the
    method where it fits (else in words), the values selected on validation by reference to that table (never
    repeated beside it), the others in words (`_in_words`). Else as columns after the method, each value selected on
    validation marked, and where the table would then be too wide for the page upright, the table as it is with a
    note that says where they are, with a second table of those values beside the rows' budgets and methods, for
    the appendix."""
    if out.selection:
        return _with_training_length(table, out), None
    fields, marks = _marked_selections({name: cells for name, cells in table.detail.items() if name != CI_LEVEL})
    if not fields:
        return table, None
    headers = {name: selection.field_name(name) for name in fields}
    said = [*marks, *(f"{headers[name]}: {name.replace('_', ' ')}" for name in fields if name in ABBREVIATED),
            *(f"{headers[name]}: {method_option(name)}" for name in fields if method_option(name))]
    notes = [note for note in table.notes if not note.startswith(DIFFERENCES)]
    widened = _widened(table, fields, headers, [*said, *notes])
    if fits_upright(widened.constants_in_caption(), fit=True):
        return widened, None
    at = table.columns.index("Method") + 1
    values = Table(f"{table.name}_values", f"Values the rows differ in — {table.title}",
                   [*table.columns[:at], *headers.values()],
                   [[*row[:at], *cells] for row, cells in zip(table.rows, zip(*fields.values()))], said)
    where = f"The values its rows differ in ({', '.join(headers.values())}) are in Appendix B."
    return replace(table, notes=[*notes, where]), values


def _widened(table: Table, fields: dict[str, list[str]], headers: dict[str, str], notes: list[str]) -> Table:
    """`table` with `fields` as columns (under `headers`) after its method, and `notes`."""
    at = table.columns.index("Method") + 1
    return replace(table, columns=[*table.columns[:at], *headers.values(), *table.columns[at:]],
                   rows=[[*row[:at], *cells, *row[at:]] for row, cells in zip(table.rows, zip(*fields.values()))],
                   notes=notes)


def _with_training_length(table: Table, out: Output) -> Table:
    """`table` with a note on the fields its rows differ in (`_in_words`: the selection table, `Output.selection`, has
    the values selected on validation): the epochs in words where most rows share a value ("6 in every row (AdaLoRA
    r=16: 3)"), else as a column where it fits (a list of values with their rows read as a riddle)."""
    if not set(table.detail) - {CI_LEVEL, TUNED}:  # the rows differ in nothing the table does not show
        return table
    notes = [note for note in table.notes if not note.startswith(DIFFERENCES)]
    epochs = table.detail.get("epochs")
    if epochs is not None and not _usual(epochs):
        widened = _widened(table, {"epochs": epochs}, {"epochs": "Epochs"}, [*notes, *_in_words(table, out, ("epochs",))])
        if fits_upright(widened.constants_in_caption(), fit=True):
            return widened
    return replace(table, notes=[*notes, *_in_words(table, out)])


def _in_words(table: Table, out: Output, shown: tuple[str, ...] = ()) -> list[str]:
    """A note on the fields `table`'s rows differ in (`Table.detail`) but that it does not show (`shown`): those
    selected on validation by reference to the selection table (which lists every selected value), the training
    length, which a reader must know to compare the rows, and the fields no row selected, in words. Not the
    options an arm's name says ("BA-LoRA (rsLoRA scaling)": `OPTION_WORDS`) or one method's options, which the
    configuration table lists (`_method_options`): a caption is no place for a configuration."""
    values = {name: cells for name, cells in table.detail.items()
              if name not in (CI_LEVEL, TUNED, *shown, *OPTION_WORDS) and not method_option(name)}
    tuned = set().union(*(cell.split(" + ") for cell in table.detail.get(TUNED, [])))
    at = table.columns.index("Method")
    leads = {row[0] for row in table.rows}
    shots = table.columns[0].startswith("Shots")  # a bare count read as a rank: "LoRA 16-shot" is its 16-shot row
    names = [row[at] if len(leads) == 1 else f"{row[at]} {row[0]}{'-shot' if shots else ''}" for row in table.rows]
    said = [_field_words(name, cells, names) for name, cells in values.items()
            if name == "epochs" or name not in tuned]
    selected = [selection.field_name(name) for name in table.detail
                if name in tuned and name not in (CI_LEVEL, TUNED)]
    pointer = [f"The values its rows selected on validation ({', '.join(selected)}) are in "
               f"{out.reference(out.selection)}."] if selected else []
    return [*pointer, *(f"{words}." for words in said)]


def _usual(cells: list[str]) -> str | None:
    """The value most of `cells` hold, said once in a note with its exceptions; None where no value is most rows'."""
    by_value, common = grouped(cells, cells)
    return common if 2 * len(by_value[common]) > len(cells) else None


def _field_words(name: str, cells: list[str], names: list[str]) -> str:
    """One field's value per row in words: the usual value once, then its exceptions ("Epochs: 6 in every row
    (AdaLoRA r=16: 3)"), else each value with its rows."""
    by_value, common = grouped(cells, names)
    said = name.replace("_", " ") if name in ABBREVIATED else selection.field_name(name)  # "learning rate", not "lr"
    said = said[:1].upper() + said[1:]
    if DASH in by_value or _usual(cells) is None:
        valued = [(value, named) for value, named in by_value.items() if value != DASH]
        return f"{said}: " + "; ".join(f"{value} ({', '.join(named)})" for value, named in valued)
    return f"{said}: {common} in every row (" + "; ".join(
        f"{', '.join(named)}: {value}" for value, named in by_value.items() if value != common) + ")"


def _marked_selections(fields: dict[str, list[str]]) -> tuple[dict[str, list[str]], list[str]]:
    """The fields the rows differ in, each value selected on validation marked (`SELECTED`) instead of a column
    of which fields were (`TUNED`), where that is the same in every row or every field it differs in has its
    column; with the note that says what the mark means (none where nothing is marked)."""
    rest = {name: cells for name, cells in fields.items() if name != TUNED}
    if TUNED not in fields:
        return rest, []
    chosen = [set(cell.split(" + ")) for cell in fields[TUNED]]
    if not (set.union(*chosen) - set.intersection(*chosen)) <= set(rest):
        return fields, []
    marked = {name: [cell + SELECTED if name in picked else cell for cell, picked in zip(cells, chosen)]
              for name, cells in rest.items()}
    if marked == rest:
        return rest, []
    # an unmarked epochs value may have been chosen too: a sweep that lengthens tried twice as many on validation
    # and marks them tuned only where they won (Appendix B's selection table lists every try)
    said = f"{SELECTED}: selected on validation, else the preset's value"
    if "epochs" in marked:
        said += ("; an unmarked epochs value is the preset's where a longer training, if the sweep tried one on "
                 "validation, was not better")
    return marked, [said]


def table_tex(table: Table, out: Output) -> str:
    """The table's compact columns with its CI levels (`_with_levels`) and the fields its rows differ in
    (`_with_fields`: the appendix gets those that do not fit, `Output.appendix`), less the columns with one value
    in every row (said in the caption), without the statistics legend (the paper states it once, in
    `statistics.tex`) or where the equivalence margin comes from (the report says which spec declared it). A table
    whose rows repeat their setting is a listing: the setting a heading over its rows, on as many pages as it
    needs."""
    table = _named(table)
    table = replace(table, column_notes={name: note for name, note in table.column_notes.items()
                                         if name not in EXPLAINED_ONCE},
                    notes=[CONTENTION if note == COST_NOTE else note for note in table.notes
                           if note != LEVERS_NOTE])  # the body's "One lever at a time" says what the groups are
    # the margin itself and when it was fixed, not its spec
    fixed = "fixed before the runs" if _own_runs_only(table.notes, out.study) else margin_fixed(out.study, brief=True)
    plain = [f"{note.removesuffix('.')}, {fixed}." if note.startswith(MARGIN_NOTE) else note
             for note in table.notes if not note.startswith(MARGIN_SOURCE)]
    short, values = _with_fields(_with_levels(replace(table.select(table.compact or table.columns), legend="",
                                                      notes=plain)), out)
    short = short.constants_in_caption()
    if "≤ majority" in short.columns and len(short.columns) > NARROW:  # a column of zeros said once, in words
        at = short.columns.index("≤ majority")
        if short.rows and all(row[at].startswith("0/") for row in short.rows):
            short = replace(short.select([c for c in short.columns if c != "≤ majority"]),
                            notes=[*short.notes, "No run in this table ended at or below the majority-class rate."])
    values_input = None if values is None else _input(values, table_latex(values, label=f"tab:{out.label(values.name)}"),
                                                     out)
    if values_input is not None and values_input not in out.appendix:  # a table two parts show lists them once
        out.appendix.append(values_input)
    grouped = short.columns[0] in ("Setting", LEVER) and len({row[0] for row in short.rows}) < len(short.rows)
    label = f"tab:{out.label(table.name)}"
    latex = listing_latex(short, label) if grouped else table_latex(short, label, fit=True)
    if out.selection:  # the note's mark (`Output.reference`), escaped as text, becomes a LaTeX reference
        latex = latex.replace(out.reference(out.selection), rf"Table~\ref{{tab:{out.label(out.selection)}}}")
    return _input(table, latex, out)


def _named(table: Table) -> Table:
    """`table` with the setting labels in its title, notes and cells said with names, not codes (`named_labels`)."""
    return replace(table, title=named_labels(table.title), rows=[[named_labels(c) for c in row] for row in table.rows],
                   notes=[named_labels(note) for note in table.notes],
                   column_notes={name: named_labels(note) for name, note in table.column_notes.items()})


def _input(table: Table, latex: str, out: Output) -> str:
    """Write a table's LaTeX to the source's `tables/`; the line that inputs it."""
    (out.folder / "tables").mkdir(exist_ok=True)
    (out.folder / "tables" / f"{table.name}.tex").write_text(latex)
    return rf"\input{{{out.tex}/tables/{table.name}.tex}}" + "\n"


@dataclass(frozen=True)
class Cited:
    """A claim with the tables and figures that hold its numbers, referred to at its end: "… (Table 3)."."""

    text: str
    floats: tuple[Table | Figure, ...]


def citing(sentences: list[str], floats: list[Table | Figure]) -> list[str | Cited]:
    """`sentences` whose last cites `floats` (the tables and figures they discuss); where there is no sentence,
    one that points to them, so that every float the body shows is referred to from its text."""
    if not floats:
        return list(sentences)
    if not sentences:
        return [Cited("", tuple(floats))]
    return [*sentences[:-1], Cited(sentences[-1], tuple(floats))]


def _references(floats: tuple[Table | Figure, ...], out: Output) -> str:
    """LaTeX that refers to `floats`: "Table~\\ref{…}", "Figure~\\ref{…} and Tables~\\ref{…} and~\\ref{…}"."""
    kinds: dict[str, list[str]] = {}
    for block in floats:
        kind, prefix = ("Table", "tab") if isinstance(block, Table) else ("Figure", "fig")
        kinds.setdefault(kind, []).append(rf"\ref{{{prefix}:{out.label(block.name)}}}")
    said = []
    for kind, refs in kinds.items():
        said.append(f"{kind}{'s' if len(refs) > 1 else ''}~{listed(refs, ' and~')}")
    return " and ".join(said)


def claim_latex(claim: str | Cited, out: Output) -> str:
    if isinstance(claim, str):
        return latex_text(claim)
    if not claim.text:
        return f"The numbers are in {_references(claim.floats, out)}."
    return f"{latex_text(claim.text.removesuffix('.'))} ({_references(claim.floats, out)})."


def sentences_latex(sentences: list[str | Cited], out: Output) -> str:
    """One claim as a paragraph; several as a list, easier to scan than a wall of numbers."""
    if len(sentences) < 2:
        return "".join(claim_latex(s, out) + "\n\n" for s in sentences)
    return "\n".join([r"\begin{itemize}", *(rf"\item {claim_latex(s, out)}" for s in sentences), r"\end{itemize}",
                      ""])


def part_latex(sentences: list[str | Cited], floats: list[Table | Figure], out: Output, empty: str) -> str:
    """Claims, then the floats; `empty` (what is missing) where there is neither."""
    if not sentences and not floats:
        return latex_text(empty) + "\n"
    return sentences_latex(sentences, out) + "".join(table_tex(f, out) if isinstance(f, Table) else figure_tex(f, out)
                                                for f in floats)


def paragraph_latex(sentences: list[str | Cited], out: Output) -> str:
    """Claims as one paragraph, where a list would break up the text around it (the abstract); "" where none."""
    return " ".join(claim_latex(s, out) for s in sentences) + "\n" if sentences else ""
