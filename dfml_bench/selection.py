"""The `name[key=value,...]` selection grammar (as in benchopt), e.g. `glyphs[domain=symbols]`."""

from __future__ import annotations

from typing import Any

import yaml

from dfml_bench.errors import ConfigError, shown


def parse_selection(text: str) -> tuple[str, dict[str, Any]]:
    """Split 'name[a=1,b=x]' into ('name', {'a': 1, 'b': 'x'}); values are parsed as YAML scalars."""
    text = text.strip()
    if "[" not in text:
        return text, {}
    if not text.endswith("]"):
        raise ConfigError(f"{shown(text)} is not of the form name[key=value,...]; close the bracket.")
    name, _, inner = text[:-1].partition("[")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in inner.split(","))):
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"{shown(item, 80)} in {shown(text, 100)} needs the form key=value.")
        try:
            params[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"{shown(item, 80)} in {shown(text, 100)} has a value that is not a plain scalar; quote it "
                              "or use a number, a word or true/false.") from None
    return name.strip(), params
