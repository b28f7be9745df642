"""The image recipe without building: the mirror comes from the host's apt configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from escape_fed.errors import OperationFailed
from escape_fed.lab.demo import demo_spec
from escape_fed.lab.image import SUITE, find_mirror, image_hash


def _apt(tmp_path: Path, sources: dict[str, str], sources_list: str | None = None) -> Path:
    d = tmp_path / "apt"
    (d / "sources.list.d").mkdir(parents=True)
    for name, text in sources.items():
        (d / "sources.list.d" / name).write_text(text)
    if sources_list is not None:
        (d / "sources.list").write_text(sources_list)
    return d


def test_mirror_from_deb822_main_suite_entry(tmp_path: Path) -> None:
    apt = _apt(
        tmp_path,
        {
            "debian.sources": (
                "Types: deb\n# a comment\nURIs: http://security.example/debian-security\n"
                "Suites: bookworm-security\nComponents: main\n\n"
                "Types: deb deb-src\nURIs: http://mirror.example/debian/\n"
                "Suites: bookworm bookworm-updates\nComponents: main\n"
            )
        },
    )
    assert find_mirror(apt) == "http://mirror.example/debian"


def test_mirror_skips_disabled_entries_and_falls_back_to_sources_list(tmp_path: Path) -> None:
    apt = _apt(
        tmp_path,
        {"x.sources": "Enabled: no\nTypes: deb\nURIs: http://off.example/\nSuites: bookworm\n"},
        "# deb http://commented.example/debian bookworm main\n"
        "deb http://sec.example/debian-security bookworm-security main\n"
        "deb [signed-by=/k.gpg arch=amd64] http://list.example/debian bookworm main\n",
    )
    assert find_mirror(apt) == "http://list.example/debian"


def test_no_mirror_is_one_clear_error(tmp_path: Path) -> None:
    apt = _apt(tmp_path, {})
    with pytest.raises(OperationFailed, match="no Debian mirror found"):
        find_mirror(apt)


def test_this_machine_has_a_mirror() -> None:
    assert find_mirror().startswith(("http://", "https://", "file:/"))


def test_image_hash_covers_the_package_list(tmp_path: Path) -> None:
    base = demo_spec(tmp_path)
    other = demo_spec(tmp_path / "elsewhere")
    assert image_hash(base) == image_hash(other)  # the state dir is not part of the recipe
    extra = base.__class__(**{**base.__dict__, "image_packages": ("jq",)})
    assert image_hash(extra) != image_hash(base)
    assert SUITE == "trixie"
