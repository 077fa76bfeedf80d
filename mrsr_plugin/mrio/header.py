"""The one check of a DICOM MR slice's header, before any pixel is read: shared by the scan and the loading of
:mod:`mrsr_plugin.mrio.dicom`, and so by ``mrsr-prepare`` and ``mrsr-infer`` alike.

:func:`header_problem` looks, once, at every header field that reading the pixels, the intensity mapping and the
geometry of a derived series use (per frame for enhanced multi-frame files; the list: docs/data.md#bad-input), and
at the pixel data (``pixel_data=True``: a decoder here, encapsulated exactly when compressed, as long as the header
needs, so a 65535 x 65535 claim is refused before anything is allocated); it says in one short sentence what is
wrong with the first bad one.

Values are taken as pydicom gives them, which for a malformed number is its text: ``abc`` is reported, not raised.
"""
import math
import re

from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder

UNDEFINED_LENGTH = 0xFFFFFFFF
# an MR slice has at most a few thousand pixels a side; a larger header is broken (65535 x 65535 would need 8 GiB)
MAX_IMAGE_SIDE = 8192
MAX_FRAMES = 65535  # frames of one file (an enhanced series of a few thousand is large)
ORTHONORMAL_TOLERANCE = 0.01  # direction cosines: |length - 1| and |row . column| at most this
MONOCHROME = ('MONOCHROME1', 'MONOCHROME2')
REQUIRED_UIDS = ('SOPClassUID', 'SOPInstanceUID', 'SeriesInstanceUID')
UID = re.compile(r'[0-9]+(\.[0-9]+)*')


class _Problem(Exception):
    """What is wrong with a header (internal: :func:`header_problem` returns its message)."""


def header_problem(ds, pixel_data=True):
    """Why the header of one DICOM file cannot be used as an MR slice, in one short sentence, or None.

    Args:
        ds (Dataset): As read by pydicom, with or without (deferred) pixel data.
        pixel_data (bool): Also check the transfer syntax and the length of the pixel data against the header.

    Returns:
        str | None: The first problem found (see the module docstring).
    """
    try:
        _check(ds, pixel_data)
    except _Problem as problem:
        return str(problem)
    return None


def _show(value, limit=40):
    """A header value as the reason quotes it: multi-values joined by backslashes, cut to ``limit`` characters."""
    text = '\\'.join(str(v) for v in value) if isinstance(value, (MultiValue, list, tuple)) else str(value)
    return repr(text if len(text) <= limit else text[:limit] + '...')


def _present(container, keyword):
    """Whether ``keyword`` is in ``container`` with a value (an empty element counts as absent)."""
    value = container.get(keyword)
    return value is not None and value != '' and not (isinstance(value, (MultiValue, list)) and len(value) == 0)


def _numbers(container, keyword, count):
    """The value of ``keyword`` as ``count`` finite floats; _Problem otherwise."""
    value = container.get(keyword)
    values = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    if len(values) != count:
        raise _Problem(f'{keyword} has {len(values)} value{"s" * (len(values) != 1)} ({_show(value)}), not {count}')
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise _Problem(f'{keyword} {_show(value)} is not {"a number" if count == 1 else f"{count} numbers"}') from None
    if not all(math.isfinite(v) for v in numbers):
        raise _Problem(f'{keyword} {_show(value)} is not finite')
    return numbers


def _integer(container, keyword, low, high, default=None):
    """The value of ``keyword`` as one integer in [low, high] (``default`` when absent, if not None)."""
    if not _present(container, keyword):
        if default is None:
            raise _Problem(f'no {keyword}')
        return default
    value = container.get(keyword)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _Problem(f'{keyword} {_show(value)} is not an integer') from None
    if not number.is_integer():
        raise _Problem(f'{keyword} {_show(value)} is not an integer')
    if not low <= number <= high:
        raise _Problem(f'{keyword} {int(number)} is out of range ({low} to {high})')
    return int(number)


def _check_uids(ds):
    for keyword in REQUIRED_UIDS:
        if not _present(ds, keyword):
            raise _Problem(f'no {keyword}')
        text = str(ds.get(keyword)).strip()
        if len(text) > 64 or not UID.fullmatch(text):
            raise _Problem(f'{keyword} {_show(text)} is not a UID (digits and dots, at most 64 characters)')


def _check_image(ds):
    """The image attributes; returns the number of frames."""
    if not _present(ds, 'Rows') or not _present(ds, 'Columns'):
        raise _Problem('no image size (Rows/Columns)')
    rows, columns = (_integer(ds, keyword, 1, 2**16 - 1) for keyword in ('Rows', 'Columns'))
    if max(rows, columns) > MAX_IMAGE_SIDE:
        raise _Problem(f'image size {rows}x{columns} (rows x columns) is not plausible for MR (at most '
                       f'{MAX_IMAGE_SIDE} a side): a broken header?')
    samples = _integer(ds, 'SamplesPerPixel', 0, 2**16 - 1, default=1)
    if samples != 1:
        raise _Problem(f'colour image ({samples} samples per pixel); MR slices are single-channel' if samples > 1 else
                       'SamplesPerPixel 0')
    if not _present(ds, 'PhotometricInterpretation'):
        raise _Problem('no PhotometricInterpretation')
    photometric = str(ds.PhotometricInterpretation).strip()
    if photometric not in MONOCHROME:
        raise _Problem(f'PhotometricInterpretation {_show(photometric)} with 1 sample per pixel; MR slices are '
                       'MONOCHROME1 or MONOCHROME2')
    bits = _integer(ds, 'BitsAllocated', 1, 64)
    if bits not in (8, 16, 32):
        raise _Problem(f'BitsAllocated {bits}; MR slices have 8, 16 or 32')
    _integer(ds, 'BitsStored', 1, bits)
    _integer(ds, 'PixelRepresentation', 0, 1)
    if _present(ds, 'InstanceNumber'):
        _integer(ds, 'InstanceNumber', -2**31, 2**31 - 1)
    return _integer(ds, 'NumberOfFrames', 1, MAX_FRAMES, default=1)


def functional_group(ds, frame, macro):
    """The item of ``macro`` (e.g. 'PlanePositionSequence') that applies to ``frame`` of an enhanced multi-frame
    file: per-frame functional groups first, then shared ones; None for classic files."""
    for groups, index in (('PerFrameFunctionalGroupsSequence', frame), ('SharedFunctionalGroupsSequence', 0)):
        items = ds.get(groups)
        if items and index < len(items) and items[index].get(macro):
            return items[index].get(macro)[0]
    return None


def _check_frame(ds, frame):
    """The geometry and intensity mapping that apply to one frame."""
    measures = functional_group(ds, frame, 'PixelMeasuresSequence') or ds
    if _present(measures, 'PixelSpacing') and min(_numbers(measures, 'PixelSpacing', 2)) <= 0:
        raise _Problem(f'PixelSpacing {_show(measures.PixelSpacing)} is not positive')
    position = functional_group(ds, frame, 'PlanePositionSequence') or ds
    if _present(position, 'ImagePositionPatient'):
        _numbers(position, 'ImagePositionPatient', 3)
    orientation = functional_group(ds, frame, 'PlaneOrientationSequence') or ds
    if _present(orientation, 'ImageOrientationPatient'):
        cosines = _numbers(orientation, 'ImageOrientationPatient', 6)
        row, column = cosines[:3], cosines[3:]
        lengths = [math.sqrt(sum(v * v for v in axis)) for axis in (row, column)]
        dot = sum(r * c for r, c in zip(row, column))
        if max(abs(length - 1) for length in lengths) > ORTHONORMAL_TOLERANCE or abs(dot) > ORTHONORMAL_TOLERANCE:
            raise _Problem(f'ImageOrientationPatient {_show(orientation.ImageOrientationPatient)} is not two '
                           f'orthonormal direction cosines (lengths {lengths[0]:.3g} and {lengths[1]:.3g}, dot '
                           f'product {dot:.3g})')
    transform = functional_group(ds, frame, 'PixelValueTransformationSequence') or ds
    for keyword in ('RescaleSlope', 'RescaleIntercept'):
        if keyword in transform:
            if not _present(transform, keyword):
                raise _Problem(f'{keyword} is empty')
            value, = _numbers(transform, keyword, 1)
            if keyword == 'RescaleSlope' and value == 0:
                raise _Problem('RescaleSlope 0 maps every pixel to one value')
    if _present(ds, 'SliceLocation'):
        _numbers(ds, 'SliceLocation', 1)


def _check_modality_lut(ds):
    lut = ds.get('ModalityLUTSequence')
    if lut:
        item = lut[0]
        if not _present(item, 'LUTData'):
            raise _Problem('a Modality LUT without LUTData')
        descriptor = _numbers(item, 'LUTDescriptor', 3)
        if descriptor[2] not in (8, 16):
            raise _Problem(f'Modality LUT of {descriptor[2]:g} bits; 8 or 16 are defined')


def install_hint(transfer_syntax):
    """Why pixel data in ``transfer_syntax`` cannot be decoded here, and what to install; None if it can be."""
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        return f'compressed with {transfer_syntax.name}, which pydicom cannot decode'
    if decoder.is_available:
        return None
    # pydicom lists e.g. 'pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-openjpeg>=2.0'; pylibjpeg goes first
    options = sorted(decoder.missing_dependencies, key=lambda dep: not dep.startswith('pylibjpeg'))
    packages = [dep.partition(' - requires ')[2] or dep for dep in options]
    alternatives = f' (or {"; or ".join(packages[1:])})' if len(packages) > 1 else ''
    return f'compressed with {transfer_syntax.name}; install {packages[0]}{alternatives} to decode it'


def pixel_data_length(ds):
    """The length of the pixel data element as the file declares it (without reading deferred data)."""
    element = ds.get_item('PixelData', keep_deferred=True)
    return element.length if isinstance(element, RawDataElement) else len(element.value or b'')


def _check_pixel_data(ds, rows, columns, frames):
    """Why the pixel data cannot be used: undecodable here, not encapsulated as its transfer syntax says, or shorter
    than the image needs."""
    meta = getattr(ds, 'file_meta', None)
    transfer_syntax = meta.get('TransferSyntaxUID') if meta is not None else None
    if not transfer_syntax:
        raise _Problem('no TransferSyntaxUID in the file meta information')
    try:
        compressed = transfer_syntax.is_compressed
    except ValueError:  # pydicom knows no such transfer syntax
        raise _Problem(f'TransferSyntaxUID {_show(transfer_syntax)} is not a transfer syntax pydicom knows') from None
    length = pixel_data_length(ds)
    encapsulated = length == UNDEFINED_LENGTH
    if compressed:
        hint = install_hint(transfer_syntax)
        if hint is not None:
            raise _Problem(hint)
        if not encapsulated:
            raise _Problem(f'TransferSyntaxUID says {transfer_syntax.name}, but the pixel data are not encapsulated '
                           '(compressed pixel data are): a wrong transfer syntax?')
        return
    if encapsulated:
        raise _Problem(f'encapsulated (compressed) pixel data, but TransferSyntaxUID says {transfer_syntax.name}')
    expected = rows * columns * frames * (int(ds.BitsAllocated) // 8)  # 1 sample per pixel, whole bytes: checked
    if length < expected:
        raise _Problem(f'pixel data of {length} bytes, but {rows}x{columns} pixels x {frames} frames of '
                       f'{ds.BitsAllocated} bits need {expected}: a wrong header or a cut file')


def not_an_mr_image(ds):
    """Why a DICOM file is no MR image at all (no pixel data, another modality, colour), or None: such a file is
    not an input of the tools, rather than a broken one."""
    if 'PixelData' not in ds:
        return 'no pixel data'
    modality = str(ds.get('Modality') or '').strip()
    if modality != 'MR':
        return f'modality {modality or "missing"}, not MR'
    samples = ds.get('SamplesPerPixel')
    if isinstance(samples, int) and samples > 1:
        return f'colour image ({samples} samples per pixel); MR slices are single-channel'
    return None


def _check(ds, pixel_data):
    other = not_an_mr_image(ds)
    if other is not None:
        raise _Problem(other)
    _check_uids(ds)
    frames = _check_image(ds)
    enhanced = bool(ds.get('PerFrameFunctionalGroupsSequence') or ds.get('SharedFunctionalGroupsSequence'))
    for frame in range(frames if enhanced else 1):
        _check_frame(ds, frame)
    _check_modality_lut(ds)
    if pixel_data:
        _check_pixel_data(ds, int(ds.Rows), int(ds.Columns), frames)
