"""Write (or check) the JSON Schema of every message.

Usage::

    python -m schemas.export           # rewrite schemas/json/*.schema.json
    python -m schemas.export --check   # exit 1 if any file is stale or missing

Non-Python producers validate against these files; the drift test in
``tests/unit/test_schemas.py`` keeps them equal to the models.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from schemas.registry import MESSAGE_TYPES
from schemas.trajectory import FILE_TYPES

SCHEMA_DIR = Path(__file__).resolve().parent / "json"
"""Where the committed schemas live."""

_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_SUFFIX = ".schema.json"


def render_all() -> dict[str, str]:
    """Return the text of every schema file, by file name."""
    rendered: dict[str, str] = {}
    for name, model in {**MESSAGE_TYPES, **FILE_TYPES}.items():
        schema = {"$schema": _DIALECT, **model.model_json_schema(mode="validation")}
        text = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False)
        rendered[f"{name}{_SUFFIX}"] = text + "\n"
    return rendered


def export_all(directory: Path) -> list[Path]:
    """Write every schema into ``directory`` (created if needed).

    Returns:
        The written paths, in registry order.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in render_all().items():
        path = directory / file_name
        path.write_text(text, encoding="utf-8", newline="\n")
        written.append(path)
    return written


def stale_files(directory: Path) -> list[Path]:
    """Return the schema files in ``directory`` that are missing, differ or are unknown."""
    rendered = render_all()
    stale = [
        directory / file_name
        for file_name, text in rendered.items()
        if not (directory / file_name).is_file()
        or (directory / file_name).read_text(encoding="utf-8") != text
    ]
    if directory.is_dir():
        stale += sorted(p for p in directory.glob(f"*{_SUFFIX}") if p.name not in rendered)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m schemas.export", description="Export message JSON Schemas."
    )
    parser.add_argument(
        "--check", action="store_true", help="only compare; exit 1 listing stale files"
    )
    parser.add_argument(
        "--dir", type=Path, default=SCHEMA_DIR, help=f"target directory (default {SCHEMA_DIR})"
    )
    args = parser.parse_args(argv)
    directory: Path = args.dir
    if args.check:
        stale = stale_files(directory)
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        if stale:
            print("run `python -m schemas.export` to regenerate", file=sys.stderr)
            return 1
        return 0
    for path in export_all(directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
