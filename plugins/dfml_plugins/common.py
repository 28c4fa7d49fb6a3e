"""Declaration pieces shared by several built-in components (light: no torch import).

A method family whose members differ only in some defaults (BiDf-MKD, PURER) is a table of
:class:`Variant` rows registered by :func:`add_variants`; `META_LR` is the meta learning rate
that every tuned method searches.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any, get_type_hints

META_LR = {"train.meta_lr": {"log_uniform": [1e-4, 1e-2]}}


@dataclass(frozen=True)
class Variant:
    """A method registered as another one with some defaults changed (`changes`). It takes the
    configured values of its `base` (profile, --config, --set method.BASE.x=...) for every
    setting it does not change; its own block (method.NAME) wins over both."""

    name: str
    base: str | None
    help: str
    changes: dict[str, Any] = field(default_factory=dict)
    access: str = "black"
    queries: str | None = None      # None: the base's
    meta: dict[str, Any] = field(default_factory=dict)   # further registration metadata

    def description(self) -> str:
        if self.base is None:
            return self.help
        changed = ", ".join(f"{k}={v}" for k, v in self.changes.items())
        return f"{self.help} [{changed}; otherwise as {self.base} is configured]"


def variant_params(base: type, name: str, changes: dict[str, Any]) -> type:
    """`base`'s params dataclass with the defaults in `changes` (help, choices and bounds kept),
    defined in (and importable by name from) `base`'s module, like the hand-written ones."""
    hints = get_type_hints(base)
    fields_ = {f.name: f for f in dataclasses.fields(base)}
    unknown = set(changes) - set(fields_)
    if unknown:
        raise ValueError(f"variant '{name}' changes unknown settings {sorted(unknown)}")
    cls_name = "".join(part.title() for part in name.split("_")) + "Params"
    cls = dataclasses.make_dataclass(
        cls_name, [(k, hints[k], field(default=v, metadata=fields_[k].metadata)) for k, v in changes.items()],
        bases=(base,))
    cls.__module__ = base.__module__
    setattr(sys.modules[base.__module__], cls_name, cls)
    return cls


def variant_table(root: type, variants: list[Variant]) -> dict[str, type]:
    """Params dataclass of each variant, built from its base's (the first variant has no base)."""
    built: dict[str, type] = {}
    for v in variants:
        built[v.name] = root if v.base is None else variant_params(built[v.base], v.name, v.changes)
    return built


def add_variants(register: Any, factory: str, variants: list[Variant], params: dict[str, type],
                 search_space: Any) -> None:
    """Register a method and its variants from their table; a variant records its `base`, whose
    configured values it takes for the settings it does not change. `search_space(name)` gives
    each one's tuning space."""
    queries: dict[str, str | None] = {}
    for v in variants:
        queries[v.name] = v.queries or (queries[v.base] if v.base else None)
        register(v.name, factory, params=params[v.name], help=v.description(), access=v.access,
                 data_free=v.access != "real_data",
                 queries=queries[v.name], uses=("architecture",), search_space=search_space(v.name),
                 **({"base": v.base} if v.base else {}), **v.meta)
