"""The user-error types of the whole package, and how a command line shows one.

An error of these types is expected (bad input, a wrong option, a missing file): the command lines print
:func:`first_line` of it without a traceback and exit with status 2. Anything else is a bug and keeps its traceback.
"""


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
