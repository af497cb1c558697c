"""The README documents what the code offers."""

from __future__ import annotations

import re
from pathlib import Path

from scoperun.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme_table() -> None:
    """Each field of Settings appears (as `name`) in a row of the README's settings table."""
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `")]
    documented = {name for row in rows for name in re.findall(r"`([a-z_0-9]+)`", row.split("|")[1])}
    missing = sorted(set(Settings.model_fields) - documented)
    assert not missing, f"settings missing from the README: {missing}"


def test_readme_links_point_at_existing_files() -> None:
    """Every relative link in the README names a file of the repository."""
    links = re.findall(r"\]\(([^)#:]+)\)", README.read_text())
    assert links
    missing = [link for link in links if not (README.parent / link).exists()]
    assert not missing, missing
