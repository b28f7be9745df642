"""A fast block-style YAML writer for plain data (dict, list, str, int, float, bool, None).

PyYAML's representer costs ~140 us per small file, too slow for 10,000 host_vars files. This
writer emits the same block style; any string that is not unmistakably plain is written
double-quoted by PyYAML's own emitter. Round-tripping through ``yaml.safe_load`` is
property-tested (tests/unit/test_yamlout.py).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./@+-]*$")
_RESERVED = re.compile(
    r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF"
    r"|null|Null|NULL|~|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)|<<)$"
)


def _quoted(value: str) -> str:
    """A double-quoted scalar by PyYAML's own emitter (rare strings; correct escapes)."""
    text: str = yaml.dump(
        value, Dumper=_Dumper, default_style='"', width=1 << 30, allow_unicode=True
    )
    return text.removesuffix("\n").removesuffix("\n...")


def scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):  # YAML 1.1 floats need PyYAML's spelling (1.0e-05, .inf)
        text: str = yaml.dump(value, Dumper=_Dumper)
        return text.removesuffix("\n").removesuffix("\n...")
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and not _RESERVED.fullmatch(value):
            return value
        return _quoted(value)
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _lines(value: Any, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        for k, v in value.items():
            key = scalar(str(k))
            if isinstance(v, (dict, list, tuple)) and v:
                out.append(f"{pad}{key}:")
                _lines(v, indent + 2 if isinstance(v, dict) else indent, out)
            else:
                out.append(f"{pad}{key}: {_empty_or_scalar(v)}")
    elif isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, dict) and item:
                start = len(out)
                _lines(item, indent + 2, out)
                out[start] = f"{pad}- {out[start][indent + 2 :]}"  # "- key: value" on one line
            elif isinstance(item, (list, tuple)) and item:
                out.append(f"{pad}-")
                _lines(item, indent + 2, out)
            else:
                out.append(f"{pad}- {_empty_or_scalar(item)}")
    else:
        out.append(pad + scalar(value))


def _empty_or_scalar(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[]"
    return scalar(value)


def dump(value: Any) -> str:
    """Block-style YAML text of ``value`` (a dict or list of plain data)."""
    if isinstance(value, (dict, list, tuple)) and not value:
        return _empty_or_scalar(value) + "\n"
    out: list[str] = []
    _lines(value, 0, out)
    return "\n".join(out) + "\n"
