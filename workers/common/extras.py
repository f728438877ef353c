"""The pinned requirements of one pyproject extra, one per line, for an image's dependency layer.

``python workers/common/extras.py stt`` prints the project's core dependencies and the ``stt`` extra, with
self-references such as ``voicepod[local]`` expanded. A Dockerfile installs these from ``pyproject.toml``
alone, before any code is copied, so a code edit does not re-run the install (nor the model bake after it);
pip's own ``pip install .[stt]`` would need the whole source tree. Run as a file, not a module, so it needs
no package on the path; Python 3.11+ (``tomllib``).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
_SELF = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)\[(?P<extras>[^\]]+)\]\s*$")


def extra_requirements(extra: str, pyproject: Path = PYPROJECT) -> list[str]:
    """Requirement strings that ``pip install .[extra]`` installs, in pyproject order, without repeats.

    Args:
        extra: Name of an entry in ``[project.optional-dependencies]``, e.g. ``stt``.
        pyproject: The pyproject.toml to read.
    """
    project = tomllib.loads(pyproject.read_text())["project"]
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    if extra not in extras:
        raise KeyError(f"no extra {extra!r} in {pyproject}; extras: {sorted(extras)}")
    found: list[str] = []

    def add(requirements: list[str]) -> None:
        for requirement in requirements:
            match = _SELF.match(requirement)
            if match and match["name"].replace("_", "-").lower() == project["name"].lower():
                for name in match["extras"].split(","):
                    add(extras[name.strip()])
            elif requirement not in found:
                found.append(requirement)

    add(list(project.get("dependencies", [])))
    add(extras[extra])
    return found


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python workers/common/extras.py EXTRA")
    print("\n".join(extra_requirements(sys.argv[1])))
