"""The import rules of the house style: DICOM and web never import each other, and
storage never imports a network framework."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pacs"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        for name in _imports(path):
            if name == forbidden or any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    return found


def test_scp_does_not_import_the_web_side() -> None:
    assert _violations("scp", ("pacs.viewer", "flask", "werkzeug", "waitress")) == []


def test_viewer_does_not_import_the_dicom_services() -> None:
    assert _violations("viewer", ("pacs.scp", "pynetdicom")) == []


def test_storage_knows_nothing_of_networks_or_web() -> None:
    forbidden = ("pynetdicom", "flask", "werkzeug", "waitress", "pacs.scp", "pacs.viewer")
    assert _violations("storage", forbidden) == []


def test_only_config_reads_the_environment() -> None:
    # Writing is allowed (metrics hands prometheus_client its directory that way).
    reading = re.compile(r"os\.getenv\(|os\.environ\.get\(|os\.environ\[[^\]]+\](?!\s*=)")
    readers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name != "config.py" and reading.search(path.read_text(encoding="utf-8")):
            readers.append(str(path.relative_to(PACKAGE.parent)))
    assert readers == []
