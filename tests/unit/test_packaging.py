"""The wheel carries what an installed localbvi needs: the catalog and its data files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_contains_catalog_and_data(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("localbvi-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "localbvi/models.toml",
        "localbvi/data/gemma3.jinja",
        "localbvi/data/experiments.toml",
        "localbvi/tui/app.tcss",
        "localbvi/engine/worker.py",
    ):
        assert needed in names, needed
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "localbvi = localbvi.console:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.slow
def test_installed_copy_finds_its_catalog(tmp_path: Path) -> None:
    """`pip install .` elsewhere: the bundled catalog is read from the package, not the repo."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(dist)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = dist.glob("localbvi-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import localbvi.catalog as c; p = c.bundled_catalog_path(); "
        "print(p); print(len(c.load_catalog().entries))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={
            "PYTHONPATH": str(site),
            "PATH": "/usr/bin:/bin",
            "LOCALBVI_CONFIG_DIR": str(tmp_path / "cfg"),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    path, count = proc.stdout.split()
    assert path == str(site / "localbvi" / "models.toml")
    assert int(count) >= 18
