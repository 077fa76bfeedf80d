"""DICOM trees and PNG/TIFF slice folders -> ordered MR series and their pixels, without precision loss.

A TCIA download (``collection/patient/study/series/*.dcm``, as the NBIA Data Retriever writes it) or any folder
tree of DICOM files is scanned by reading headers only. Neither file nor folder names are trusted: slices are
grouped by SeriesInstanceUID and ordered by their position along the slice normal. Inputs that cannot be used are
returned as :class:`Skipped` with a short reason; problems that stop a series from loading raise
:class:`DicomInputError`, whose message names the file.

Requires pydicom >= 3.0 (``pydicom.pixels``).
"""
import os
from dataclasses import dataclass

import cv2
import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.pixels.utils import get_expected_length
from tqdm import tqdm

from mrsr_plugin.compat import MRSRUserError

IMAGE_EXTENSIONS = ('.png', '.tif', '.tiff')
HEADER_DEFER_SIZE = '1 KB'  # header scans skip over values larger than this (the pixel data) without reading them
UNDEFINED_LENGTH = 0xFFFFFFFF
POSITION_DECIMALS = 4  # slice positions (mm) are compared after rounding, so equal positions tie on float noise
ORIENTATION_TOLERANCE = 1e-3  # direction cosines that differ by less belong to the same stack


class DicomInputError(MRSRUserError):
    """A DICOM file or series that cannot be loaded; the message names the file and the problem."""


@dataclass
class Skipped:
    """An input left out, and why."""
    path: str  # file or series identifier
    reason: str  # one short human sentence


@dataclass
class Series:
    """One MR series: its files ordered along the slice normal, and the size of its slices."""
    uid: str  # SeriesInstanceUID
    patient_id: str  # PatientID ('' if absent)
    study_uid: str
    description: str  # SeriesDescription ('' if absent)
    modality: str
    orientation: tuple | None  # ImageOrientationPatient as 6 floats; None if absent or not shared by all files
    files: list  # str paths in slice order; a multi-frame file appears once
    rows: int
    columns: int
    num_slices: int  # total frames over all files

    @property
    def plane(self):
        """'axial', 'coronal', 'sagittal' or 'unknown': the patient axis closest to the slice normal."""
        if self.orientation is None:
            return 'unknown'
        normal = np.abs(_slice_normal(self.orientation))
        return ('sagittal', 'coronal', 'axial')[int(np.argmax(normal))]


@dataclass
class _SliceHeader:
    """What the scan keeps of one DICOM file."""
    path: str
    series_uid: str
    patient_id: str
    study_uid: str
    description: str
    modality: str
    rows: int
    columns: int
    frames: int
    orientation: tuple | None
    position: tuple | None
    instance_number: int | None


def _slice_normal(orientation):
    """Cross product of the row and column direction cosines of ImageOrientationPatient."""
    return np.cross(orientation[:3], orientation[3:])


def _floats(value, count):
    """A DICOM multi-value as a tuple of ``count`` floats, or None if absent or malformed."""
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return values if len(values) == count else None


def functional_group(ds, frame, macro):
    """The item of ``macro`` (e.g. 'PlanePositionSequence') that applies to ``frame`` of an enhanced multi-frame
    file: per-frame functional groups first, then shared ones; None for classic files."""
    for groups, index in (('PerFrameFunctionalGroupsSequence', frame), ('SharedFunctionalGroupsSequence', 0)):
        items = ds.get(groups)
        if items and index < len(items) and items[index].get(macro):
            return items[index].get(macro)[0]
    return None


def frame_attribute(ds, frame, macro, keyword):
    """``keyword`` from the frame's functional group in an enhanced multi-frame file, else from ``ds`` itself."""
    item = functional_group(ds, frame, macro)
    return (ds if item is None else item).get(keyword)


def _is_truncated(ds, path):
    """Whether an element's declared length runs past the end of the file (an interrupted download or copy).

    pydicom stops quietly at the end of a short file, so this compares the file size with the values it recorded.
    Call it before touching elements: only unconverted elements carry their file offsets.
    """
    size = os.path.getsize(path)
    for tag in ds.keys():
        elem = ds.get_item(tag, keep_deferred=True)
        if (isinstance(elem, RawDataElement) and elem.length != UNDEFINED_LENGTH
                and elem.value_tell + elem.length > size):
            return True
    return False


def read_header(path):
    """One file -> its :class:`_SliceHeader`, or the reason it is skipped."""
    if os.path.basename(path).upper() == 'DICOMDIR':
        return 'DICOMDIR index, not an image'
    if os.path.getsize(path) == 0:
        return 'empty file'
    try:
        ds = pydicom.dcmread(path, defer_size=HEADER_DEFER_SIZE)
    except InvalidDicomError:
        return 'not a DICOM file'
    except OSError as err:
        return f'cannot read file: {err.strerror or err}'
    except Exception as err:  # pydicom's parser raises many kinds of errors on corrupt headers
        return f'unreadable DICOM header ({type(err).__name__}: {err})'
    try:
        if _is_truncated(ds, path):
            return 'truncated file'
        if 'PixelData' not in ds:
            return 'no pixel data'
        modality = str(ds.get('Modality') or '').strip()
        if modality != 'MR':
            return f'modality {modality or "missing"}, not MR'
        if not ds.get('SeriesInstanceUID'):
            return 'no SeriesInstanceUID'
        if not ds.get('Rows') or not ds.get('Columns'):
            return 'no image size (Rows/Columns)'
        samples = ds.get('SamplesPerPixel') or 1
        if samples != 1:
            return f'colour image ({samples} samples per pixel); MR slices are single-channel'
        instance_number = ds.get('InstanceNumber')
        return _SliceHeader(
            path=path,
            series_uid=str(ds.SeriesInstanceUID),
            patient_id=str(ds.get('PatientID') or ''),
            study_uid=str(ds.get('StudyInstanceUID') or ''),
            description=str(ds.get('SeriesDescription') or ''),
            modality=modality,
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            frames=int(ds.get('NumberOfFrames') or 1),
            orientation=_floats(frame_attribute(ds, 0, 'PlaneOrientationSequence', 'ImageOrientationPatient'), 6),
            position=_floats(frame_attribute(ds, 0, 'PlanePositionSequence', 'ImagePositionPatient'), 3),
            instance_number=int(instance_number) if instance_number not in (None, '') else None)
    except Exception as err:  # malformed values surface only when pydicom converts them
        return f'unreadable DICOM header ({type(err).__name__}: {err})'


def _shared_orientation(headers):
    """The orientation all files share, or None when one lacks it or the series mixes stacks (e.g. localizers)."""
    first = headers[0].orientation
    shared = first is not None and all(
        h.orientation is not None and np.allclose(h.orientation, first, atol=ORIENTATION_TOLERANCE) for h in headers)
    return first if shared else None


def build_series(headers):
    """Headers of one SeriesInstanceUID -> a :class:`Series` with ordered files, or :class:`Skipped`.

    Files are ordered by position along the slice normal when every file has a position and all share an
    orientation, otherwise by InstanceNumber; ties (e.g. echoes at one position) go by InstanceNumber, then path.
    """
    first = headers[0]
    sizes = sorted({(h.rows, h.columns) for h in headers})
    if len(sizes) > 1:
        names = [f'{rows}x{columns}' for rows, columns in sizes]
        return Skipped(f'{first.series_uid} ({first.path})',
                       f'mixed slice sizes {", ".join(names[:-1])} and {names[-1]} (rows x columns)')
    orientation = _shared_orientation(headers)

    def instance_key(h):
        return h.instance_number is None, h.instance_number or 0, h.path

    if orientation is not None and all(h.position is not None for h in headers):
        normal = _slice_normal(orientation)
        headers = sorted(headers, key=lambda h: (round(float(np.dot(h.position, normal)), POSITION_DECIMALS),
                                                 *instance_key(h)))
    else:
        headers = sorted(headers, key=instance_key)
    return Series(uid=first.series_uid, patient_id=first.patient_id, study_uid=first.study_uid,
                  description=first.description, modality=first.modality, orientation=orientation,
                  files=[h.path for h in headers], rows=first.rows, columns=first.columns,
                  num_slices=sum(h.frames for h in headers))


def _walk_files(root, skipped):
    """Regular, non-hidden files under ``root`` in sorted order; unreadable folders go to ``skipped``."""

    def on_error(err):
        skipped.append(Skipped(err.filename, f'cannot read folder: {err.strerror or err}'))

    for folder, subfolders, names in os.walk(root, onerror=on_error):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith('.'))
        for name in sorted(names):
            path = os.path.join(folder, name)
            if not name.startswith('.') and os.path.isfile(path):
                yield path


def scan_dicom_tree(root, progress=False):
    """Find the MR series in a folder tree of DICOM files, reading headers only.

    Every regular non-hidden file is a candidate whatever its name or extension; files are grouped by
    SeriesInstanceUID, never by folder. See :func:`build_series` for the slice order.

    Args:
        root (str): Folder to walk recursively.
        progress (bool): Show a progress bar over the files. Default: False.

    Returns:
        tuple[list[Series], list[Skipped]]: Series sorted by (PatientID, StudyInstanceUID, SeriesInstanceUID),
            and the files and series left out with their reasons.
    """
    if not os.path.isdir(root):
        raise DicomInputError(f'{root}: no such folder')
    skipped = []
    paths = list(_walk_files(root, skipped))
    by_uid = {}
    for path in tqdm(paths, desc='Scanning DICOM', unit='file', disable=not progress):
        header = read_header(path)
        if isinstance(header, str):
            skipped.append(Skipped(path, header))
        else:
            by_uid.setdefault(header.series_uid, []).append(header)
    series = []
    for headers in by_uid.values():
        built = build_series(headers)
        (skipped if isinstance(built, Skipped) else series).append(built)
    series.sort(key=lambda s: (s.patient_id, s.study_uid, s.uid))
    return series, skipped


def _install_hint(transfer_syntax):
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


def _invert_monochrome1(pixels, ds):
    """MONOCHROME1 stored values -> MONOCHROME2: ``lowest + highest - value`` over the stored range
    (``2**BitsStored - 1 - value`` for unsigned data), so that higher is brighter and the range is kept."""
    bits = int(ds.BitsStored)
    lowest, highest = (-2**(bits - 1), 2**(bits - 1) - 1) if ds.get('PixelRepresentation') == 1 else (0, 2**bits - 1)
    return (lowest + highest) - pixels.astype(np.int64)


def _read_frames(path, rows, columns):
    """All frames of one file in frame order -> float32 (frames, rows, columns) in modality units."""
    try:
        ds = pydicom.dcmread(path)
    except Exception as err:  # the file may have changed since the scan; pydicom raises many kinds of errors
        raise DicomInputError(f'{path}: cannot read DICOM file ({type(err).__name__}: {err})') from err
    if _is_truncated(ds, path):
        raise DicomInputError(f'{path}: truncated file')
    transfer_syntax = ds.file_meta.get('TransferSyntaxUID')
    if transfer_syntax is None:
        raise DicomInputError(f'{path}: no TransferSyntaxUID in the file meta information')
    if transfer_syntax.is_compressed:
        hint = _install_hint(transfer_syntax)
        if hint is not None:
            raise DicomInputError(f'{path}: {hint}')
    elif len(ds.PixelData) < get_expected_length(ds, 'bytes'):
        raise DicomInputError(f'{path}: truncated pixel data ({len(ds.PixelData)} of '
                              f'{get_expected_length(ds, "bytes")} bytes that Rows, Columns and frames need)')
    try:
        pixels = ds.pixel_array
    except Exception as err:  # decoder plugins raise many kinds of errors on corrupt or unsupported data
        raise DicomInputError(f'{path}: cannot decode {transfer_syntax.name} pixel data ({err})') from err
    pixels = pixels.reshape(-1, *pixels.shape[-2:])
    if pixels.shape[1:] != (rows, columns):
        raise DicomInputError(f'{path}: slices of {pixels.shape[1]}x{pixels.shape[2]}, expected {rows}x{columns} '
                              '(rows x columns; did the file change since the scan?)')
    if ds.get('PhotometricInterpretation') == 'MONOCHROME1':
        pixels = _invert_monochrome1(pixels, ds)
    frames = np.empty(pixels.shape, np.float32)
    for index, frame in enumerate(pixels):
        transform = functional_group(ds, index, 'PixelValueTransformationSequence')
        frames[index] = apply_modality_lut(frame, ds if transform is None else transform)
    return frames


def load_series(series):
    """Pixels of a series in file order and, within multi-frame files, frame order.

    Modality LUT / RescaleSlope and RescaleIntercept are applied (per frame for enhanced multi-frame files), and
    MONOCHROME1 is inverted to MONOCHROME2 over the stored range (:func:`_invert_monochrome1`).

    Args:
        series (Series): From :func:`scan_dicom_tree`.

    Returns:
        ndarray: float32 (num_slices, rows, columns) in modality units.

    Raises:
        DicomInputError: A file is unreadable, truncated, compressed with a codec whose decoder is not installed,
            or no longer matches the scan. Nothing partial is returned.
    """
    volume = np.empty((series.num_slices, series.rows, series.columns), np.float32)
    filled = 0
    for path in series.files:
        frames = _read_frames(path, series.rows, series.columns)
        if filled + len(frames) > series.num_slices:
            raise DicomInputError(f'{path}: more frames than the scan found in series {series.uid}')
        volume[filled:filled + len(frames)] = frames
        filled += len(frames)
    if filled != series.num_slices:
        raise DicomInputError(f'{series.files[-1]}: series {series.uid} has {filled} frames, the scan found '
                              f'{series.num_slices}')
    return volume


def series_skip_reason(series):
    """The :class:`DicomInputError` message that loading ``series`` raises, or None if it loads."""
    try:
        load_series(series)
    except DicomInputError as err:
        return str(err)
    return None


def single_channel(img):
    """(H, W) or (H, W, C) from OpenCV -> (H, W), or None for colour. Grey stored as equal B, G, R channels is
    reduced to one; an alpha channel is ignored."""
    if img.ndim == 2:
        return img
    colour = img[..., :3]
    if colour.shape[-1] == 3 and (colour == colour[..., :1]).all():
        return colour[..., 0]
    return None


def read_image_folder(root):
    """Read exported MR slices (*.png, *.tif, *.tiff, 8- or 16-bit) under ``root``, recursively and sorted.

    Arrays are returned as stored, uint8 or uint16 and not rescaled, so that callers know the bit depth (values
    0-255 or 0-65535). Other files are ignored; images that cannot be used are returned as :class:`Skipped`.

    Args:
        root (str): Folder to walk.

    Returns:
        tuple[list[tuple[str, ndarray]], list[Skipped]]: (path relative to ``root`` without extension, with '/'
            separators; (H, W) uint8 or uint16 array) pairs, and the images left out with their reasons.
    """
    if not os.path.isdir(root):
        raise DicomInputError(f'{root}: no such folder')
    images, skipped, source_of = [], [], {}
    for path in _walk_files(root, skipped):
        if not path.lower().endswith(IMAGE_EXTENSIONS):
            continue
        name = os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, '/')
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if img is None:
            skipped.append(Skipped(path, 'unreadable image'))
        elif img.dtype not in (np.uint8, np.uint16):
            skipped.append(Skipped(path, f'unsupported pixel type {img.dtype}; expected 8- or 16-bit'))
        elif (grey := single_channel(img)) is None:
            skipped.append(Skipped(path, 'colour image; MR slices are single-channel'))
        elif name in source_of:
            skipped.append(Skipped(path, f'same name as {source_of[name]} (keys must be unique)'))
        else:
            source_of[name] = path
            images.append((name, grey))
    return images, skipped
