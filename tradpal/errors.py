"""Errors a user can fix, reported as one line (exit code 2 from the CLI)."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input (a file, an argument, a configuration key): the message names what
    and where. Nothing has been written when this is raised."""


class ConfigError(InputError):
    """Invalid configuration: the message names the key and what was expected."""
