"""The committed JupyterLab extension (labs/share/labextensions/smartlab-jupyterlab/) is built
from the committed sources (labs/jupyterlab/): `npm run build` records a hash of them in the
built package.json (labs/jupyterlab/stamp.mjs); this recomputes it. Rebuild: docs/dashboards.md.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from labs.board import DATA_DIR

SOURCE = Path(__file__).resolve().parents[2] / "labs" / "jupyterlab"
BUILT = DATA_DIR / "labextensions" / "smartlab-jupyterlab"
SOURCES = ["package.json", "package-lock.json", "tsconfig.json", "stamp.mjs"]  # as stamp.mjs
MAX_BUNDLE = 40_000  # bytes: JupyterLab's own packages are shared from the page, never bundled


def source_hash() -> str:
    files = sorted([*SOURCES, *(f"src/{p.name}" for p in (SOURCE / "src").iterdir())])
    digest = hashlib.sha256()
    for name in files:
        digest.update(f"{name}\0".encode())
        digest.update((SOURCE / name).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def built() -> dict:
    return json.loads((BUILT / "package.json").read_text())


def test_the_committed_build_is_of_the_committed_sources() -> None:
    assert built()["smartlab"]["sourceHash"] == source_hash(), (
        "labs/jupyterlab/ changed since labs/share/labextensions/smartlab-jupyterlab/ was built: "
        "cd labs/jupyterlab && npm ci && PATH=../../.venv/bin:$PATH npm run build"
    )


def test_the_build_is_loadable_and_small() -> None:
    package = built()
    assert package["name"] == BUILT.name
    assert (BUILT / package["jupyterlab"]["_build"]["load"]).is_file()
    # a bundled copy of any JupyterLab package would be hundreds of kB
    assert sum(p.stat().st_size for p in (BUILT / "static").iterdir()) < MAX_BUNDLE
