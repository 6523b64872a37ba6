"""Print one of the README's two first commands: `demo` (install and run) or `test`.

`.ci/run` runs the `test` one, so what CI runs is exactly what the README tells a person to type.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def command(which: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {which}-command -->\s*```(?:sh|bash)?\n(.+?)\n```", text, re.S)
    if not match:
        raise SystemExit(f"README.md has no '<!-- {which}-command -->' block")
    return " ".join(line.rstrip("\\").strip() for line in match.group(1).splitlines())


if __name__ == "__main__":
    print(command(sys.argv[1] if len(sys.argv) > 1 else "test"))
