"""The user-error types of the whole package, and how a command line shows one.

An error of these types is expected (bad input, a wrong option, a missing file): the command lines print
:func:`first_line` of it without a traceback and exit with status 2. Anything else is a bug and keeps its traceback,
except inside the work on one input of a collection (:class:`isolate`): there any error but those that
:func:`stops_the_run` is that input's skip, and its traceback goes to the run's report.
"""
import errno
import logging
import os
import sys
import traceback
import warnings


class MRSRUserError(Exception):
    """An expected user error: entry points print its message without a traceback."""


class OptionValueError(MRSRUserError):
    """A wrong value in an option file; the entry points name the file (``-opt``) before the message."""


class SpeedOptionError(OptionValueError):
    """A wrong key or value in an option file's ``speed:`` block."""


class WeightsMissingError(MRSRUserError, FileNotFoundError):
    """Pretrained weights (ImageNet VGG, LPIPS, DISTS) are neither on disk nor downloadable."""


class InputFileError(MRSRUserError):
    """One input (file, series, volume) that cannot be used: ``str()`` is ``'path: reason'``, both kept as
    attributes; ``InputFileError(message)`` is a message alone, with ``path`` None and ``reason`` the message."""

    def __init__(self, path, reason=None):
        if reason is None:
            path, reason = None, path
        super().__init__(reason if path is None else f'{path}: {reason}')
        self.path, self.reason = path, reason


class DicomInputError(InputFileError):
    """A DICOM file or series that cannot be loaded."""


class VolumeInputError(InputFileError):
    """A volume file (NIfTI, MetaImage, NRRD) that cannot be used."""


class BenchmarkError(MRSRUserError):
    """A benchmark or reproduction run that cannot go on (a failed training, a missing checkpoint)."""


def first_line(err):
    """The first non-empty line of an exception's message (or its type's name)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


# --- one input's failure is that input's skip -------------------------------------------------------------------------

# an OSError with one of these errnos stops the run wherever it happens: no later input could be written either
RUN_STOPPING_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
MAX_MESSAGES = 20  # distinct library messages kept per input


class RunStopError(MRSRUserError):
    """Raised inside the work on one input for a problem that no other input escapes (the output cannot be
    written): :class:`isolate` lets it through and the run ends with it."""


def innermost_os_error(err):
    """The innermost OSError with an errno in ``err``'s chain of causes, or None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno is not None:
            return err
        err = err.__cause__ or err.__context__
    return None


def _within(path, folder):
    try:
        path, folder = os.path.abspath(os.fsdecode(path)), os.path.abspath(folder)
        return os.path.commonpath([path, folder]) == folder
    except (TypeError, ValueError):
        return False


def stops_the_run(err, output=None):
    """Whether ``err``, raised while working on one input, ends the whole run rather than skipping that input.

    It does for what is not an ``Exception`` (KeyboardInterrupt, SystemExit), a :class:`RunStopError`, CUDA out of
    memory (``torch.cuda.OutOfMemoryError``: lower the batch or tile instead), an OSError
    (anywhere in its chain of causes) for a full disk or quota or a read-only file system, and any OSError on a file
    inside ``output`` (the folder the run writes: e.g. EACCES there). Everything else, MemoryError included, is
    confined to the input: its arrays are freed as the error unwinds, and the next input may well fit.
    """
    if not isinstance(err, Exception) or isinstance(err, RunStopError):
        return True
    if type(err).__name__ == 'OutOfMemoryError' and type(err).__module__.startswith('torch'):
        return True  # the GPU's memory: a setting (batch, tiles), not the input
    os_err = innermost_os_error(err)
    if os_err is None:
        return False
    if os_err.errno in RUN_STOPPING_ERRNOS:
        return True
    names = [name for name in (os_err.filename, os_err.filename2) if name is not None]
    return output is not None and any(_within(name, output) for name in names)


def _short_file_name(path):
    """A source file's path below the ``sys.path`` entry it was imported from (``pydicom/pixels/utils.py``), so that
    a traceback names no absolute path; unchanged when it is below none."""
    best = None
    for entry in sys.path:
        entry = os.path.abspath(entry or os.curdir)
        if _within(path, entry) and (best is None or len(entry) > len(best)):
            best = entry
    return path if best is None else os.path.relpath(path, best)


def format_traceback(err):
    """The full traceback of ``err`` (with its causes) as text, source files named by :func:`_short_file_name`."""
    exc = traceback.TracebackException.from_exception(err)
    pending, seen = [exc], set()
    while pending:
        item = pending.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        for frame in item.stack:
            frame.filename = _short_file_name(frame.filename)
        pending += [item.__cause__, item.__context__]
    return ''.join(exc.format()).rstrip('\n')


def describe_failure(err):
    """One line for an error confined to one input: the message of an expected error (:class:`InputFileError`:
    its reason), ``out of memory`` for a MemoryError, otherwise ``unexpected TYPE: message``."""
    if isinstance(err, InputFileError):
        return first_line(err.reason)
    if isinstance(err, MRSRUserError):
        return first_line(err)
    if isinstance(err, MemoryError):
        return 'out of memory (MemoryError) while working on it'
    return f'unexpected {type(err).__name__}: {first_line(err)}'


class _Collector(logging.Handler):
    def __init__(self, messages):
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record):
        self.messages.append(record.getMessage())


class isolate:  # noqa: N801  (used as a statement: ``with isolate() as guard:``)
    """Confines whatever goes wrong in a block of work on one input (a file, series, volume or image) to that input.

    An error in the block that :func:`stops_the_run` says does not end the run is swallowed and kept as
    ``guard.error``, with ``guard.reason`` (one line, :func:`describe_failure`) and ``guard.traceback`` (the full
    text, for the report); the caller records the skip and goes on. Run-stopping errors, and instances of ``fatal``,
    pass through. Warnings and the ``pydicom`` logger's messages raised in the block are kept in ``guard.messages``
    (distinct, in order, at most :data:`MAX_MESSAGES`) instead of reaching the console::

        with isolate(output=tmp) as guard:
            work_on(series)
        if guard.error is not None:
            skipped.append(Skipped.of(guard, path))

    Args:
        output (str): The folder the run writes; an OSError on a file inside it ends the run.
        fatal (tuple[type]): More exception types that end the run (e.g. CUDA out of memory: a setting to change).
    """

    def __init__(self, output=None, fatal=()):
        self.output, self.fatal = output, tuple(fatal)
        self.error, self.reason, self.traceback, self.messages = None, None, None, []

    def __enter__(self):
        self._warnings = warnings.catch_warnings(record=True)
        self._records = self._warnings.__enter__()
        warnings.simplefilter('always', UserWarning)
        warnings.simplefilter('always', RuntimeWarning)
        self._logged = []
        self._logger = logging.getLogger('pydicom')
        self._handler, self._propagate = _Collector(self._logged), self._logger.propagate
        self._logger.addHandler(self._handler)
        self._logger.propagate = False
        return self

    def __exit__(self, kind, err, tb):
        self._logger.removeHandler(self._handler)
        self._logger.propagate = self._propagate
        self._warnings.__exit__(None, None, None)
        found = [f'{w.category.__name__}: {w.message}' for w in self._records] + self._logged
        for message in found:
            message = ' '.join(str(message).split())
            # pydicom's warn_and_log sends the same text as a warning and to its logger
            if message not in self.messages and f'UserWarning: {message}' not in self.messages:
                self.messages.append(message)
        del self.messages[MAX_MESSAGES:]
        if err is None or stops_the_run(err, self.output) or isinstance(err, self.fatal):
            return False
        self.error, self.reason, self.traceback = err, describe_failure(err), format_traceback(err)
        return True
