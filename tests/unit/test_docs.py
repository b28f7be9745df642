"""The federation file reference documents every field the model accepts."""

from __future__ import annotations

import re
import typing

from pydantic import BaseModel

from escape_fed.model.loader import _strip
from escape_fed.model.schema import Federation
from tests.conftest import ROOT


def _fields(model: type[BaseModel]) -> set[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(name)
        inner = _strip(field.annotation)
        for candidate in (inner, *typing.get_args(inner)):
            model_type = _strip(candidate)
            if isinstance(model_type, type) and issubclass(model_type, BaseModel):
                names |= _fields(model_type)
    return names


def test_reference_names_every_field() -> None:
    doc = (ROOT / "docs" / "federation.md").read_text()
    documented = set(re.findall(r"`([a-z_]+)`", doc))
    documented |= {
        part for dotted in re.findall(r"`([a-z_.]+)`", doc) for part in dotted.split(".")
    }
    missing = sorted(_fields(Federation) - documented)
    assert not missing, f"docs/federation.md does not document: {missing}"


def test_readme_names_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "docs/federation.md" in readme
