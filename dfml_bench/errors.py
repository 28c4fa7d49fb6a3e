"""Typed errors that the CLI reports as one clear sentence (a traceback only with --debug)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the closest option, or a list of valid options."""
    options = sorted(set(options))
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f" Did you mean '{close[0]}'?"
    if not options:
        return ""
    shown = ", ".join(options[:12]) + (", ..." if len(options) > 12 else "")
    return f" Valid choices: {shown}."
