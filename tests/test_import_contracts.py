"""DESIGN §2's import rules (the contracts in pyproject.toml, run by `make test`): they hold on the tree, and
each kind of break, planted in a copy of the tree, fails `lint-imports` naming the rule it breaks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "annotation", "flows", "training", "prompts")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packages and the contracts, copied (no data, no caches)."""
    root = tmp_path_factory.mktemp("tree")
    ignore = shutil.ignore_patterns("__pycache__", "*.parquet", "*.png", "*.jinja", "*.txt")
    for package in PACKAGES:
        shutil.copytree(REPO / package, root / package, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_tree_keeps_every_contract(tree):
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "0 broken" in result.stdout


PLANTED = [
    ("training/planted.py", "import flows.runtime.settings", "training runs as a job"),
    ("flows/planted.py", "import training.sft", "flows launches training as a job"),
    ("annotation/planted.py", "from flows.catalog import Catalog", "annotation (Label Studio"),
    ("flows/ingest/planted.py", "import annotation.consensus", "ingest knows only the contract"),
    ("schemas/planted.py", "import annotation.consensus", "schemas is the contract"),
    ("schemas/planted.py", "import pyarrow", "schemas stays light"),
    ("flows/ingest/planted.py", "import torch", "the curation environment has no torch"),
    ("flows/catalog/planted.py", "import flows.stages.ingest", "inside flows"),
]
RULES = sorted({rule for _, _, rule in PLANTED})


@pytest.mark.parametrize(("module", "line", "rule"), PLANTED)
def test_a_planted_import_breaks_its_rule(tree, module, line, rule):
    planted = tree / module
    planted.write_text(f"{line}\n")
    try:
        result = lint_imports(tree)
    finally:
        planted.unlink()
    assert result.returncode != 0
    assert rule in broken_contracts(result.stdout), result.stdout[-3000:]  # (an import of training breaks two)


def broken_contracts(report: str) -> list[str]:
    """The start of each broken contract's name (as far as the rules above quote it), from lint-imports' summary."""
    flat = " ".join(report.split())
    summary = flat.split("dependencies.", 1)[1].split(" Contracts: ", 1)[0].strip(" -")
    parts = re.split(r" (KEPT|BROKEN)(?: |$)", summary)
    states = dict(zip(parts[0::2], parts[1::2], strict=False))
    quoted = {name: next((r for r in RULES if name.startswith(r)), name) for name in states}
    return [quoted[name] for name, state in states.items() if state == "BROKEN"]
