"""The user-facing errors of nccurate: one base, so the CLI handles them in one place.

Data errors of one video are not here: they are :class:`curation.errors.InputError` with a
closed-vocabulary class, and they go to the failures table instead of stopping the run.
"""

from __future__ import annotations


class NccurateError(Exception):
    """A reason a command cannot do what it was asked, for the user, on one line; the command
    exits with :attr:`exit_code`."""

    exit_code = 2

    def one_line(self) -> str:
        """The message with every run of whitespace (newlines included) as one space."""
        return " ".join(str(self).split())


class ConfigError(NccurateError, ValueError):
    """A configuration error; ``key``: the dotted key it is about, if any (``load_config`` adds
    where that key was set: a config file or ``--set``)."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class RunError(NccurateError, RuntimeError):
    """Why a run cannot start or did not succeed."""


class OutputError(NccurateError, ValueError):
    """Why an output directory cannot be inspected, reported or read."""


class AccountingError(NccurateError, RuntimeError):
    """Counts that must agree do not: the run's outputs are not trustworthy."""


class ArgumentError(NccurateError, ValueError):
    """A command-line argument that cannot be used as given: a file that does not match its
    partner (a truth file and its manifest), a glob that matches nothing, options that go
    together given alone."""
