"""MkDocs hook (mkdocs.yml `hooks:`): a "Results" page per committed results folder, generated at build time
from the folder's report, `results/<name>/report/report.md`, which `balora report --runs results/<name> --check`
(run by the test suite) keeps equal to what the committed runs give. Nothing is copied into docs/: a page
is the report itself. Figures are not committed (`balora report` draws them); where they have been drawn
the page shows them, else it says how to draw them, so that a clean clone builds with `--strict` too."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
SECTION = "Results"
IMAGE = re.compile(r"^!\[[^\]]*\]\((figures/[^)]+)\)$", flags=re.MULTILINE)
PDF = re.compile(r" \(\[PDF\]\((figures/[^)]+)\)\)")


def folders() -> list[Path]:
    """The committed results folders that have a report, by name."""
    return sorted(path.parents[1] for path in (ROOT / "results").glob("*/report/report.md"))


def on_config(config: Any) -> Any:
    """Put one page per folder under the nav's Results section (added before the lab notes)."""
    pages = [{folder.name: f"results/{folder.name}.md"} for folder in folders()]
    nav = [entry for entry in config["nav"] if not (isinstance(entry, dict) and SECTION in entry)]
    at = next((i for i, entry in enumerate(nav) if isinstance(entry, dict) and "Lab notes" in entry), len(nav))
    config["nav"] = [*nav[:at], {SECTION: pages}, *nav[at:]]
    return config


def page(folder: Path, files: Files, config: Any) -> str:
    """The report of `folder` as a page in `results/`, its figures (where drawn) added to the site."""
    report = folder / "report"

    def figure(match: re.Match) -> str:
        drawn = report / match.group(1)
        if not drawn.is_file():
            return (f"*Figure `{match.group(1)}` is drawn by `balora report --runs results/{folder.name}` "
                    "(figures are not committed).*")
        files.append(File.generated(config, f"results/{folder.name}/{match.group(1)}", abs_src_path=str(drawn)))
        return match.group(0).replace("(figures/", f"({folder.name}/figures/")

    def pdf(match: re.Match) -> str:
        drawn = report / match.group(1)
        if not drawn.is_file():
            return ""
        files.append(File.generated(config, f"results/{folder.name}/{match.group(1)}", abs_src_path=str(drawn)))
        return f" ([PDF]({folder.name}/{match.group(1)}))"

    text = (report / "report.md").read_text()
    return PDF.sub(pdf, IMAGE.sub(figure, text))


def on_files(files: Files, config: Any) -> Files:
    for folder in folders():
        files.append(File.generated(config, f"results/{folder.name}.md", content=page(folder, files, config)))
    return files
