"""Typed errors that the CLI reports as one clear sentence (a traceback only with --debug)."""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable
from typing import Any

SHOWN_CHARS = 200  # the most an error message quotes of a value
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 3, 4, 6, 6, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 120, 120, 60


class DfmlError(Exception):
    """Base of every user-facing error: the message names the problem and the fix."""


class ConfigError(DfmlError):
    """A configuration, profile or command-line value is invalid."""


class PluginError(DfmlError):
    """A plugin failed to load or registered something invalid (fatal only in strict mode)."""


class AccessError(DfmlError):
    """A method asked for a capability (real data, white-box weights) its declaration forbids."""


class DataError(DfmlError):
    """A dataset is missing, malformed or cannot be rendered."""


class StoreError(DfmlError):
    """A results directory, run file or checkpoint cannot be read or written (corrupt, read-only, full)."""


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """`repr(value)` for an error message, at most `limit` characters: nested or huge values (a YAML
    alias bomb) are abbreviated without ever being expanded in full."""
    text = value if isinstance(value, str) and len(value) <= limit - 2 else None
    text = repr(text) if text is not None else _REPR.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def bounded(message: str, limit: int = 600) -> str:
    """`message` shortened in its middle to at most about `limit` characters (keeping its end,
    where the fix is named): a last guard for text that was not quoted with :func:`shown`."""
    return message if len(message) <= limit else message[:limit - 200] + " ... " + message[-150:]


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the closest option, or a list of valid options."""
    options = sorted(set(options))
    word = str(word)[:SHOWN_CHARS]
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f" Did you mean '{close[0]}'?"
    if not options:
        return ""
    shown = ", ".join(options[:12]) + (", ..." if len(options) > 12 else "")
    return f" Valid choices: {shown}."
