"""Each public class name means one thing: no two modules of the project define it."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "schemas")


def public_classes(sources: dict[str, str]) -> dict[str, list[str]]:
    """Module path by public (no leading underscore) top-level class name."""
    found: dict[str, list[str]] = defaultdict(list)
    for where, text in sorted(sources.items()):
        for node in ast.parse(text).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                found[node.name].append(where)
    return found


def project_sources() -> dict[str, str]:
    return {
        str(path.relative_to(ROOT)): path.read_text()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
    }


def test_no_two_public_classes_share_a_name() -> None:
    found = public_classes(project_sources())
    assert len(found) > 150  # the walk sees the whole project
    shared = {name: places for name, places in found.items() if len(places) > 1}
    assert shared == {}


def test_the_check_sees_a_name_defined_twice() -> None:
    found = public_classes(
        {"a.py": "class Batch:\n    pass\n", "b.py": "class Batch:\n    pass\nclass _Batch: ..."}
    )
    assert found == {"Batch": ["a.py", "b.py"]}
