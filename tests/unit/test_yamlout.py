"""The fast YAML writer round-trips through PyYAML's safe loader for any plain data."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from escape_fed.render import yamlout

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(
        [
            "yes",
            "no",
            "on",
            "off",
            "null",
            "~",
            "1.5",
            "0x10",
            "-",
            "a: b",
            "#x",
            "@x",
            "'q'",
            '"q"',
            "x\ny",
            " lead",
            "trail ",
            "*a",
            "&a",
            "!t",
            "%p",
            "2026-11-22",
            "1e3",
            "+1",
            ".inf",
            "<<",
            "[x]",
            "{x}",
            "a,b",
            "|",
            ">",
        ]
    ),
)
plain: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(min_size=1, max_size=12), inner, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=12), plain, max_size=5))
def test_round_trip(data: dict[str, Any]) -> None:
    assert yaml.safe_load(yamlout.dump(data)) == (data or {})


def test_block_style_is_readable() -> None:
    text = yamlout.dump({"a": {"b": [1, "two", {"c": None, "e": 1}]}, "d": [], "e": {}})
    assert text == "a:\n  b:\n  - 1\n  - two\n  - c: null\n    e: 1\nd: []\ne: {}\n"
