"""Errors the engine raises on purpose; each carries a one-line message a person can act on."""


class GptuiError(Exception):
    """A failure with a clear message. exit_code follows the CLI contract: 2 bad input, 1 failure."""

    exit_code = 1


class InputError(GptuiError):
    """Bad usage or bad input: a missing corpus, an invalid setting, a corpus too short."""

    exit_code = 2


class CorpusError(InputError):
    pass


class RunNotFound(InputError):
    pass


class DamagedRun(GptuiError):
    pass


class RunBusy(InputError):
    """The run is being trained by another process (or by another job of this one)."""


class CorpusCancelled(GptuiError):
    """Preparing a corpus was cancelled (ctrl-c or Cancel); nothing partial was left on disk."""

    exit_code = 130  # as an interrupted command's
