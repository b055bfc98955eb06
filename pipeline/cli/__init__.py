"""The ``nccurate`` command line (click). No logic here: a command parses its options, calls
one function and prints what it returns.

Errors: every :class:`pipeline.errors.NccurateError` a command raises, every usage error and
every OSError that names its file becomes one ``nccurate: error: ...`` line on stderr and the
error's exit status (2), here in the group, once for all commands.
"""

from __future__ import annotations

import logging

import click

from pipeline.errors import NccurateError


class _DropBeamImportNoise(logging.Filter):
    """Beam warns at import that optional GCP client libraries are missing; not our users' concern."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


class _OneLineError(click.ClickException):
    """An error shown as one ``nccurate: error:`` line, with ``exit_code`` (default 2)."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"nccurate: error: {self.message}", err=True)


def _os_reason(exc: OSError) -> str:
    """One line for an OSError that names its file: ``FILE: why``."""
    return f"{exc.filename}: {exc.strerror or exc}"


def _one_line(exc: click.UsageError) -> click.ClickException:
    """``exc`` as a :class:`_OneLineError` that names the command; the help a bare group shows
    (``nccurate bench``) stays as it is."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        return exc
    path = exc.ctx.command_path if exc.ctx is not None else "nccurate"
    return _OneLineError(f"{path}: {exc.format_message().rstrip('.')} (see '{path} --help')")


class _OneLineErrors(click.Group):
    """Every command's user-facing errors as one line: usage errors (click shows three lines:
    usage, a hint, the error), :class:`NccurateError` (with its exit code) and file errors (an
    OSError naming its file, which would be a traceback)."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line(exc) from None
        except NccurateError as exc:
            raise _OneLineError(exc.one_line(), exc.exit_code) from None
        except OSError as exc:
            if exc.filename is None:
                raise
            raise _OneLineError(_os_reason(exc)) from None


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """nccurate: curate noisy narrated video–text data (realign, filter, weight, shard)."""
    logging.getLogger().addFilter(_DropBeamImportNoise())


def _register() -> None:
    """Attach the commands of the submodules (they import nothing from this module)."""
    from pipeline.cli import bench, run, tools, train

    for command in (run.run, run.demo, tools.inspect_cmd, tools.report_cmd, tools.manifest_cmd, train.train,
                    bench.bench):
        main.add_command(command)


_register()
