"""Regenerate the manifest's published schema and field reference from the pydantic model.

.venv/bin/python bench/gen_schema.py          # rewrite docs/manifest.schema.json and docs/manifest.md
.venv/bin/python bench/gen_schema.py --check  # exit 1 when either is out of date (tests do the same)
"""

from __future__ import annotations

import sys
from pathlib import Path

from unlearnctl.manifest import render_manifest_doc, render_schema_json

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main(argv: list[str]) -> int:
    targets = {
        DOCS / "manifest.schema.json": render_schema_json(),
        DOCS / "manifest.md": render_manifest_doc((DOCS / "manifest.md").read_text()),
    }
    stale = [path for path, text in targets.items() if not path.is_file() or path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"out of date: {path} (run .venv/bin/python bench/gen_schema.py)")
        return 1 if stale else 0
    for path in stale:
        path.write_text(targets[path])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
