"""Declaring a component's parameters: a dataclass whose fields carry defaults and help text.

Example::

    @dataclass
    class MamlParams:
        inner_steps: int = param(5, "SGD steps on the support set per task")
        inner_lr: float = param(0.01, "step size of the inner loop")
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dfml_bench.errors import ConfigError, did_you_mean, shown

INT_LIMIT = 2**63 - 1  # every integer setting fits a signed 64-bit integer (torch, NumPy, JSON readers)


def param(default: Any, help: str, *, choices: Sequence[Any] | None = None, component: str | None = None,
          min: float | None = None, max: float | None = None, exclusive_min: bool = False,
          check: Callable[[Any], str | None] | None = None) -> Any:
    """A dataclass field with a default, a help text and optional allowed values.

    ``component="estimator"`` (or another kind) marks a field whose value names a component
    the owner builds; that component's parameters are resolved from the config and hashed.
    ``min`` / ``max`` bound a number (each item of a list of numbers); ``exclusive_min=True``
    makes the lower bound strict (``> min``, e.g. a step size). ``check(value)`` may return a
    short description of what is wrong (e.g. "must be a power of two") or None when valid.
    """
    meta = {"help": help, "choices": tuple(choices) if choices else None, "component": component,
            "min": min, "max": max, "exclusive_min": exclusive_min, "check": check}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class ParamInfo:
    """One declared parameter, as `dfml-bench list` shows it."""

    name: str
    type: str
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    min: float | None = None
    max: float | None = None
    exclusive_min: bool = False

    def range_text(self) -> str:
        """The allowed range in words ('>= 1', '> 0', 'between 0 and 1'), or '' if unbounded."""
        low = None if self.min is None else f"{'>' if self.exclusive_min else '>='} {_num(self.min)}"
        high = None if self.max is None else f"<= {_num(self.max)}"
        if low and high and not self.exclusive_min:
            return f"between {_num(self.min)} and {_num(self.max)}"
        return " and ".join(part for part in (low, high) if part)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def describe(params_cls: type | None) -> list[ParamInfo]:
    """List the declared parameters of a params dataclass (empty for None)."""
    if params_cls is None:
        return []
    hints = typing.get_type_hints(params_cls)
    out = []
    for f in dataclasses.fields(params_cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        tp = hints.get(f.name, Any)
        out.append(ParamInfo(f.name, _type_name(tp), default, f.metadata.get("help", ""),
                             f.metadata.get("choices"), f.metadata.get("min"), f.metadata.get("max"),
                             bool(f.metadata.get("exclusive_min"))))
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def build_params(params_cls: type | None, values: Mapping[str, Any], where: str) -> Any:
    """Validate `values` against a params dataclass and return an instance.

    Unknown keys get a "did you mean"; values are coerced to the declared type
    (so ``--set x=3`` works for a float); a value outside ``choices`` or the declared
    ``min`` / ``max`` / ``check`` is rejected with a sentence naming the key, value and range.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} must be a mapping of parameters, not {shown(values)}.")
    if params_cls is None:
        if values:
            key = next(iter(values))
            raise ConfigError(f"{where} takes no parameters, but '{key}' was given; remove it.")
        return None
    infos = {p.name: p for p in describe(params_cls)}
    hints = typing.get_type_hints(params_cls)
    kwargs = {}
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    for key, value in values.items():
        if not isinstance(key, str):
            raise ConfigError(f"{where}: parameter names must be strings, not {shown(key)}.")
        if key not in infos:
            raise ConfigError(f"{where} has no parameter {shown(key, 80)}." + did_you_mean(key, infos))
        value = coerce(value, hints[key], f"{where}.{key}")
        choices = infos[key].choices
        if choices and value not in choices:
            raise ConfigError(f"{where}.{key} must be one of {list(choices)}, not {shown(value)}.")
        check_bounds(infos[key], fields[key].metadata.get("check"), value, f"{where}.{key}")
        kwargs[key] = value
    return params_cls(**kwargs)


def check_bounds(info: ParamInfo, check: Callable[[Any], str | None] | None, value: Any, where: str) -> None:
    """Reject a number (or an item of a list of numbers) outside the declared range."""
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items if info.min is not None or info.max is not None else ():
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        too_low = info.min is not None and (item <= info.min if info.exclusive_min else item < info.min)
        too_high = info.max is not None and item > info.max
        if too_low or too_high or item != item:  # NaN is never in range
            default = "" if info.default is None else f" (default {shown(info.default)})"
            bound = info.range_text()  # the bound it breaks, as a sentence can say it
            if too_low and not too_high:
                bound = f"{'>' if info.exclusive_min else '>='} {_num(info.min)}"  # type: ignore[arg-type]
            elif too_high:
                bound = f"<= {_num(info.max)}"  # type: ignore[arg-type]
            raise ConfigError(f"{where} must be {bound}, not {shown(item)}; "
                              f"set it to an allowed value{default}.")
    if check is not None and value is not None:
        problem = check(value)
        if problem:
            raise ConfigError(f"{where} {problem}, not {shown(value)}.")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Coerce a config value (possibly a string from --set) to a declared type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {shown(value)}.")
    if origin in (list, tuple, Sequence):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        item = args[0] if args else Any
        return [coerce(v, item, where) for v in value]
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, not {shown(value)}.")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{where} must be true or false, not {shown(value)}.")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, not {shown(value)}.")
        try:
            if tp is int:
                number = _integer(value)
                if abs(number) > INT_LIMIT:
                    raise ConfigError(f"{where} must be an integer of at most 19 digits (|x| <= 2^63-1), "
                                      f"not {shown(value)}.")
                return number
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where} must be {'an integer' if tp is int else 'a number'}, "
                              f"not {shown(value)}.") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where} must be a finite number, not {shown(value)}; "
                              "use a finite value (or null where the setting allows it).")
        return number
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where} must be a string, not {shown(value)}.")
        return str(value)
    return value


def _integer(value: Any) -> int:
    """An int, exactly: ints and integer strings are kept as they are (never rounded through a float),
    an integral float ("1e3") is accepted; anything else is a ValueError."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            return int(text)
        except ValueError:
            value = float(text)
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ValueError(value)
        return int(value)
    raise TypeError(type(value).__name__)


def component_fields(params: Any) -> list[tuple[str, str]]:
    """(kind, component name) for each field declared with ``param(..., component=kind)``."""
    if params is None:
        return []
    return [(f.metadata["component"], getattr(params, f.name)) for f in dataclasses.fields(params)
            if f.metadata.get("component") and getattr(params, f.name)]


def as_dict(params: Any) -> dict[str, Any]:
    """A params instance as a plain dict (empty for None)."""
    return dataclasses.asdict(params) if params is not None else {}
