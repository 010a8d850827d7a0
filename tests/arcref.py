"""Arc's reference implementation, ``arc.py`` from the ``megastructure-arc==0.0.1`` sdist.

Fetched with pip at test time into ``.cache/arc-sdist`` (never committed) and
imported from there. Tests that need it skip with the reason when it cannot be
fetched (no network to PyPI and no cache).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "arc-sdist"
SDIST = "megastructure-arc==0.0.1"
_module: ModuleType | None = None
_failure: str | None = None


def arc_py_path() -> Path:
    """Path of the cached ``arc.py``, downloading the sdist on first use; skips the test when impossible."""
    global _failure
    target = CACHE / "arc.py"
    if target.exists():
        return target
    if _failure is not None:
        pytest.skip(_failure)
    CACHE.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST, "-d", str(CACHE), "-q"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    archives = sorted(CACHE.glob("megastructure_arc-*.tar.gz"))
    if result.returncode != 0 or not archives:
        _failure = (
            f"arc.py reference unavailable: pip download {SDIST} failed (offline?): {result.stderr.strip()[-300:]}"
        )
        pytest.skip(_failure)
    with tarfile.open(archives[-1]) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("/arc.py") and m.name.count("/") == 1)
        extracted = archive.extractfile(member)
        assert extracted is not None
        target.write_bytes(extracted.read())
    return target


def arc() -> ModuleType:
    """The ``arc`` module itself (its ``ArcClient``, ``run_smoke_agent``, ...)."""
    global _module
    if _module is None:
        path = arc_py_path()
        spec = importlib.util.spec_from_file_location("arc_reference", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["arc_reference"] = module
        spec.loader.exec_module(module)
        _module = module
    return _module
