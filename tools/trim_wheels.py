"""Drop what a GPU machine does not run from the wheels `make gpu-wheels` made (a wheel is a zip):
pyautoattack ships a 44.7 MB example checkpoint (`pyautoattack/examples/`) and advertorch its
examples package (`advertorch_examples/`); the code the apps import is 2.8 MB.

    python tools/trim_wheels.py gpu-wheels/
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

# Top-level folders of a wheel that no app imports.
UNUSED = ("pyautoattack/examples/", "advertorch_examples/")


def trim(wheel: Path) -> int:
    """Rewrite `wheel` without the UNUSED members (and their RECORD lines); the bytes dropped."""
    with zipfile.ZipFile(wheel) as source:
        members = source.infolist()
        dropped = [m for m in members if m.filename.startswith(UNUSED)]
        if not dropped:
            return 0
        kept = [m for m in members if m not in dropped]
        gone = {m.filename for m in dropped}
        trimmed = wheel.with_suffix(".trimmed")
        with zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED) as target:
            for member in kept:
                data = source.read(member)
                if member.filename.endswith(".dist-info/RECORD"):
                    lines = data.decode().splitlines(keepends=True)
                    data = "".join(line for line in lines if line.split(",", 1)[0] not in gone).encode()
                target.writestr(member, data)
    trimmed.replace(wheel)
    return sum(m.file_size for m in dropped)


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else Path("gpu-wheels")
    for wheel in sorted(folder.glob("*.whl")):
        if dropped := trim(wheel):
            print(f"{wheel.name}: dropped {dropped / 1e6:.1f} MB of examples")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
