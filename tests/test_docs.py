"""The documentation site (mkdocs.yml, docs/) builds without a warning: no dead link or anchor, no page
left out of the navigation, no docstring that mkdocstrings cannot render. The API reference is built by
static analysis, so the build imports neither balora nor torch and takes a few seconds.

Also: every balora module has a place in the API reference, and every layer of tests/test_imports.py's
LAYERS is in the architecture page, so a new module cannot go undocumented.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "balora"

needs_mkdocs = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("mkdocs", "material", "mkdocstrings_handlers")),
    reason="mkdocs, mkdocs-material or mkdocstrings-python is not installed (pip install -e '.[test]')")


@needs_mkdocs
def test_the_documentation_builds_in_strict_mode(tmp_path: Path):
    """`mkdocs build --strict` into a temporary folder, as a user or CI would run it from the repository root."""
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").is_file()
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    assert 'id="balora.api.plan"' in api and 'id="balora.api.Plan"' in api  # the docstrings were rendered
    # a Results page per committed results folder, generated from its checked report (scripts/mkdocs_results.py)
    for report in ROOT.glob("results/*/report/report.md"):
        name = report.parents[1].name
        page = (tmp_path / "site" / "results" / name / "index.html").read_text(encoding="utf-8")
        source = re.search(r"^Source: (.+)\.$", report.read_text(encoding="utf-8"), re.MULTILINE).group(1)
        assert f"Source: {source}." in page, name


def _modules() -> set[str]:
    """Every balora module's dotted name (the package's `__init__` as the package, `__main__` left out)."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_is_in_the_api_reference():
    documented = {m for page in (ROOT / "docs" / "reference").glob("*.md")
                  for m in re.findall(r"^::: (balora[\w.]*)\s*$", page.read_text(encoding="utf-8"), re.MULTILINE)}
    assert _modules() - documented == set(), "add these modules to a page under docs/reference/"
    assert documented - _modules() == set(), "docs/reference/ names modules that do not exist"


def test_the_architecture_page_lists_every_layer():
    tree = ast.parse((ROOT / "tests" / "test_imports.py").read_text(encoding="utf-8"))
    layers = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "LAYERS" for t in node.targets))
    names = {name for layer in ast.literal_eval(layers) for name in layer}
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert {n for n in names if f"`{n}`" not in page} == set(), "docs/architecture.md's layer table misses these"
