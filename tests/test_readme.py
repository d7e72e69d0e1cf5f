"""The README's Results section: its snippets run as printed, on tables koa's writers made."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from koa_core.storage.results import QUARANTINE, RUNS, SCORES, columns_markdown
from tests.core.storage.test_results import DAY1, DAY2, write_every_table

README = Path(__file__).resolve().parents[1] / "README.md"
_SECTION = re.compile(r"^## Results\n(.*?)(?=^## )", re.DOTALL | re.MULTILINE)
_FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_SHELLS = {"bash": ["bash", "-c"], "sh": ["sh", "-c"], "python": [sys.executable, "-c"]}


def results_section() -> str:
    match = _SECTION.search(README.read_text(encoding="utf-8"))
    assert match, "README.md has no '## Results' section"
    return match.group(1)


def snippets() -> list[tuple[str, str]]:
    """(language, code) of every fenced block in the Results section."""
    return _FENCE.findall(results_section())


def top_level_imports(code: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0])
    return names


def test_the_python_snippet_does_not_import_koa() -> None:
    code = [code for language, code in snippets() if language == "python"]
    assert len(code) == 1
    assert top_level_imports(code[0]) == {"duckdb", "pandas", "polars"}


@pytest.mark.parametrize(("language", "code"), snippets())
def test_snippet_runs_as_printed_on_a_data_root(tmp_path: Path, language: str, code: str) -> None:
    # The snippet reads var/results/...: the default KOA_HOME, seen from its parent folder.
    write_every_table(tmp_path / "var" / "results")
    child = subprocess.run(
        [*_SHELLS[language], code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert str(DAY1) in child.stdout and str(DAY2) in child.stdout


@pytest.mark.parametrize("table_name", [SCORES, QUARANTINE, RUNS])
def test_column_tables_are_the_schemas(table_name: str) -> None:
    assert columns_markdown(table_name) in results_section()
