"""DICOM trees and PNG/TIFF slice folders -> ordered MR series and their pixels, without precision loss.

A TCIA download or any folder tree of DICOM files is scanned by reading headers only; slices are grouped by
SeriesInstanceUID and ordered along the slice normal, whatever the file and folder names. Every header is checked
(:func:`mrsr_plugin.mrio.header.header_problem`) before any pixel is read, and again before decoding, since files may
change; an input that cannot be used is a :class:`Skipped` with a short reason (whatever goes wrong reading one
file's header included: :class:`mrsr_plugin.errors.isolate`), a series that cannot load raises
:class:`DicomInputError` naming the file. pydicom's warnings go to the report (``messages``), not the terminal.
Symbolic links are followed (:func:`walk_files`). See docs/data.md#bad-input.

Requires pydicom >= 3.0 (``pydicom.pixels``).
"""
import os
import sys
from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from tqdm import tqdm

from mrsr_plugin.errors import DicomInputError, InputFileError, first_line, isolate
from mrsr_plugin.mrio.header import (UNDEFINED_LENGTH, functional_group, header_problem,  # noqa: F401 (re-exported)
                                     not_an_mr_image)

IMAGE_EXTENSIONS = ('.png', '.tif', '.tiff')
COLOUR_IMAGE = 'colour image; MR slices are single-channel'  # an image skipped for this is no fault of it
HEADER_DEFER_SIZE = '1 KB'  # header scans skip over values larger than this (the pixel data) without reading them
POSITION_DECIMALS = 4  # slice positions (mm) are compared after rounding, so equal positions tie on float noise
ORIENTATION_TOLERANCE = 1e-3  # direction cosines that differ by less belong to the same stack
SPACING_TOLERANCE = 1e-4  # relative: pixel spacings that differ by more make a series of mixed grids
MAX_MESSAGES = 20  # distinct library messages kept per series


@dataclass
class Skipped:
    """An input left out, and why."""
    path: str  # the file (or folder) left out
    reason: str  # one short human sentence, without the path
    patient_id: str = field(default='', compare=False)  # from the header, where one could be read
    files: int = field(default=1, compare=False)  # input files it stands for (a series: all of its files)
    # False: no fault of the input: not one the tool takes (not DICOM, not MR, no pixels, colour, a pipe) or one an
    # option left out (a pattern, a plane); the exit status counts only faults
    fault: bool = field(default=True, compare=False)
    traceback: str = field(default='', compare=False)  # the error's full traceback, for the report
    messages: list = field(default_factory=list, compare=False)  # warnings raised on the way, for the report

    @classmethod
    def of(cls, guard, path, patient_id='', files=1, reason=None):
        """The skip of an input whose work failed in ``guard`` (:class:`mrsr_plugin.errors.isolate`): under the file
        an :class:`InputFileError` names, else under ``path``; ``reason`` (default: the guard's) says why."""
        if isinstance(guard.error, InputFileError) and guard.error.path is not None:
            path = guard.error.path
        return cls(path, guard.reason if reason is None else reason, patient_id, files=files,
                   traceback=guard.traceback, messages=guard.messages)

    def report_entry(self, path, text):
        """This skip in a run's report: ``path`` as given; the reason, traceback and messages through ``text``."""
        entry = {'path': path, 'reason': text(self.reason), 'files': self.files, 'fault': self.fault}
        if self.traceback:
            entry['traceback'] = text(self.traceback)
        if self.messages:
            entry['messages'] = [text(m) for m in self.messages]
        return entry


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
    warnings: list = field(default_factory=list)  # usable, but worth a look: missing or repeated positions
    messages: list = field(default_factory=list)  # distinct warnings pydicom raised reading its headers (report only)

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
    sop_uid: str
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
    spacing: tuple | None = None  # PixelSpacing of the first frame
    messages: list = field(default_factory=list)


@dataclass
class _Ids:
    """What identifies a file, as far as its header could be read."""
    patient_id: str = ''
    series_uid: str = ''
    sop_uid: str = ''


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
    header = _scan_file(path)[0]
    return header.reason if isinstance(header, Skipped) else header


def _scan_file(path):
    """One file -> (its :class:`_SliceHeader` or :class:`Skipped`, :class:`_Ids`). Whatever goes wrong reading it
    is this file's skip, with the traceback; the warnings raised meanwhile are kept with either."""
    ids = _Ids()
    with isolate() as guard:
        header = _read_header(path, ids)
    if guard.error is not None:
        header = Skipped(path, f'unreadable DICOM header ({type(guard.error).__name__}: {first_line(guard.error)})',
                         traceback=guard.traceback)
    if isinstance(header, Skipped):
        header.patient_id = ids.patient_id
    header.messages = guard.messages
    return header, ids


def _read_header(path, ids):
    """One file -> its :class:`_SliceHeader` or :class:`Skipped`; ``ids`` is filled as the header is read."""
    if os.path.basename(path).upper() == 'DICOMDIR':
        return Skipped(path, 'DICOMDIR index, not an image', fault=False)
    try:
        if os.path.getsize(path) == 0:
            return Skipped(path, 'empty file')
        ds = pydicom.dcmread(path, defer_size=HEADER_DEFER_SIZE)
    except InvalidDicomError:
        return Skipped(path, 'not a DICOM file', fault=False)
    except OSError as err:
        return Skipped(path, f'cannot read file: {err.strerror or err}')
    truncated = _is_truncated(ds, path)  # before any element is converted: only raw ones carry their offsets
    ids.patient_id, ids.series_uid, ids.sop_uid = (
        str(ds.get(keyword) or '') for keyword in ('PatientID', 'SeriesInstanceUID', 'SOPInstanceUID'))
    if truncated:
        return Skipped(path, 'truncated file')
    other = not_an_mr_image(ds)
    if other is not None:
        return Skipped(path, other, fault=False)
    problem = header_problem(ds)
    if problem is not None:
        return Skipped(path, problem)
    instance_number = ds.get('InstanceNumber')
    return _SliceHeader(
        path=path,
        series_uid=str(ds.SeriesInstanceUID),
        sop_uid=str(ds.SOPInstanceUID),
        patient_id=ids.patient_id,
        study_uid=str(ds.get('StudyInstanceUID') or ''),
        description=str(ds.get('SeriesDescription') or ''),
        modality=str(ds.Modality).strip(),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        frames=int(ds.get('NumberOfFrames') or 1),
        orientation=_floats(frame_attribute(ds, 0, 'PlaneOrientationSequence', 'ImageOrientationPatient'), 6),
        position=_floats(frame_attribute(ds, 0, 'PlanePositionSequence', 'ImagePositionPatient'), 3),
        instance_number=int(float(instance_number)) if instance_number not in (None, '') else None,
        spacing=_floats(frame_attribute(ds, 0, 'PixelMeasuresSequence', 'PixelSpacing'), 2))


def _shared_orientation(headers):
    """The orientation all files share, or None when one lacks it or the series mixes stacks (e.g. localizers)."""
    first = headers[0].orientation
    shared = first is not None and all(
        h.orientation is not None and np.allclose(h.orientation, first, atol=ORIENTATION_TOLERANCE) for h in headers)
    return first if shared else None


def _position_warnings(headers, normal):
    """What is odd about the slice positions of a series that still loads: missing or unevenly repeated ones.

    Multi-echo, diffusion and dynamic series hold the same number of images at every position, which is fine; a
    position holding more (or fewer) images than the others points at a duplicate or a missing slice.
    """
    if len(headers) < 2 or any(h.frames > 1 for h in headers):  # multi-frame files: per-frame positions
        return []
    if all(h.orientation is None for h in headers):
        return ['no ImageOrientationPatient: slices ordered by InstanceNumber']
    if normal is None:
        return ['the files do not share one ImageOrientationPatient (a localizer?): slices ordered by '
                'InstanceNumber']
    missing = sum(1 for h in headers if h.position is None)
    if missing:
        return [f'no ImagePositionPatient in {missing} of {len(headers)} files: slices ordered by InstanceNumber']
    per_position = Counter(round(float(np.dot(h.position, normal)), POSITION_DECIMALS) for h in headers)
    if len(per_position) == 1:
        return [f'all {len(headers)} files at one ImagePositionPatient: slices ordered by InstanceNumber']
    counts = sorted(set(per_position.values()))
    if len(counts) > 1:
        usual = Counter(per_position.values()).most_common(1)[0][0]
        odd = sorted(p for p, c in per_position.items() if c != usual)
        return [f'{len(odd)} slice position(s) hold a different number of files than the others ({usual}), e.g. '
                f'{per_position[odd[0]]} at {odd[0]:g} mm along the normal: a duplicate or a missing slice?']
    return []


def _spacing_groups(headers):
    """The PixelSpacing values of ``headers`` (None: absent), those within :data:`SPACING_TOLERANCE` of each other as
    one -> their headers."""
    groups = {}
    for h in headers:
        key = next((k for k in groups if (k is None) == (h.spacing is None) and (
            k is None or np.allclose(h.spacing, k, rtol=SPACING_TOLERANCE, atol=0))), h.spacing)
        groups.setdefault(key, []).append(h)
    return groups


def _mixed(groups, what, show):
    """One :class:`Skipped` per file of a series whose files fall into several ``groups`` of ``what``."""
    names = [f'{show(key)} ({len(members)} file{"s" * (len(members) > 1)})' for key, members in groups.items()]
    mixed = f'its series mixes {what} {", ".join(names[:-1])} and {names[-1]}'
    return [Skipped(h.path, f'{mixed}; this file is {show(key)}', h.patient_id)
            for key, members in groups.items() for h in members]


def build_series(headers):
    """Headers of one SeriesInstanceUID -> a :class:`Series` with ordered files, or a list of :class:`Skipped`
    (one per file) when its files mix slice sizes or pixel spacings (one grid per series: a file that differs is a
    broken header or belongs elsewhere, and which one cannot be told).

    Files are ordered by position along the slice normal when every file has a position and all share an
    orientation, otherwise by InstanceNumber; ties (e.g. echoes at one position) go by InstanceNumber, then path.
    Missing or unevenly repeated positions are noted in :attr:`Series.warnings`.
    """
    first = headers[0]
    sizes = Counter((h.rows, h.columns) for h in headers)
    if len(sizes) > 1:
        names = [f'{rows}x{columns} ({count} file{"s" * (count > 1)})'
                 for (rows, columns), count in sorted(sizes.items())]
        mixed = f'its series mixes slice sizes {", ".join(names[:-1])} and {names[-1]} (rows x columns)'
        return [Skipped(h.path, f'{mixed}; this file is {h.rows}x{h.columns}', h.patient_id) for h in headers]
    spacings = _spacing_groups(headers)
    if len(spacings) > 1:
        return _mixed(spacings, 'pixel spacings',
                      lambda s: 'without PixelSpacing' if s is None else f'{s[0]:g}x{s[1]:g} mm')
    orientation = _shared_orientation(headers)
    normal = None if orientation is None else _slice_normal(orientation)

    def instance_key(h):
        return h.instance_number is None, h.instance_number or 0, h.path

    if normal is not None and all(h.position is not None for h in headers):
        headers = sorted(headers, key=lambda h: (round(float(np.dot(h.position, normal)), POSITION_DECIMALS),
                                                 *instance_key(h)))
    else:
        headers = sorted(headers, key=instance_key)
    messages = list(dict.fromkeys(m for h in headers for m in h.messages))[:MAX_MESSAGES]
    return Series(uid=first.series_uid, patient_id=first.patient_id, study_uid=first.study_uid,
                  description=first.description, modality=first.modality, orientation=orientation,
                  files=[h.path for h in headers], rows=first.rows, columns=first.columns,
                  num_slices=sum(h.frames for h in headers), warnings=_position_warnings(headers, normal),
                  messages=messages)


def _drop_duplicates(headers, skipped):
    """Headers without second copies of a SOPInstanceUID (the first path in sorted order stays); copies go to
    ``skipped``."""
    first_of, unique = {}, []
    for h in sorted(headers, key=lambda h: h.path):
        if h.sop_uid and h.sop_uid in first_of:
            skipped.append(Skipped(h.path, f'duplicate of {first_of[h.sop_uid]} (same SOPInstanceUID)', h.patient_id))
        else:
            first_of[h.sop_uid] = h.path
            unique.append(h)
    return unique


def walk_files(root, skipped):
    """Regular, non-hidden files under ``root`` in sorted order, following symbolic links.

    Unreadable folders, broken links, link loops, files that are not regular (pipes, devices) and files or folders
    reached a second time through a link go to ``skipped``; hidden files and folders are ignored silently.
    """

    def on_error(err):
        skipped.append(Skipped(err.filename, f'cannot read folder: {err.strerror or err}', files=0))

    walked = {os.path.realpath(root): root}  # real path of each folder walked or to be walked -> its path here
    seen_files = {}  # real path of each file yielded -> the path it was yielded as
    for folder, subfolders, names in os.walk(root, onerror=on_error, followlinks=True):
        kept = []
        for name in sorted(d for d in subfolders if not d.startswith('.')):
            path = os.path.join(folder, name)
            real = os.path.realpath(path)
            if os.path.islink(path) and real in walked:
                ancestor = real == os.path.commonpath([real, os.path.realpath(folder)])
                skipped.append(Skipped(path, 'symbolic link loop (links to a folder above it)' if ancestor else
                                       f'symbolic link to a folder already scanned as {walked[real]}', files=0,
                                       fault=False))
            else:
                walked.setdefault(real, path)
                kept.append(name)
        subfolders[:] = kept
        for name in sorted(names):
            if name.startswith('.'):
                continue
            path = os.path.join(folder, name)
            if os.path.islink(path) and not os.path.exists(path):
                skipped.append(Skipped(path, 'broken symbolic link (its target does not exist)'))
            elif not os.path.isfile(path):
                skipped.append(Skipped(path, 'not a regular file', fault=False))
            elif (real := os.path.realpath(path)) in seen_files:
                skipped.append(Skipped(path, f'same file as {seen_files[real]} (reached through a symbolic link)',
                                       fault=False))
            else:
                seen_files[real] = path
                yield path


def scan_dicom_tree(root, progress=False):
    """Find the MR series in a folder tree of DICOM files, reading headers only.

    Every regular non-hidden file is a candidate whatever its name or extension; files are grouped by
    SeriesInstanceUID, never by folder. Symbolic links are followed (see :func:`walk_files`); a second copy of a
    SOPInstanceUID is skipped. See :func:`build_series` for the slice order and the warnings a series may carry;
    a series also notes its own files that were skipped (slices missing from it), unless they were copies of
    files it keeps.

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
    paths = list(walk_files(root, skipped))
    by_uid, lost = {}, {}  # lost: SeriesInstanceUID -> (SOPInstanceUID, path) of its files skipped by the scan
    for path in tqdm(paths, desc='Scanning DICOM', unit='file', disable=not progress):
        header, ids = _scan_file(path)
        if isinstance(header, Skipped):
            skipped.append(header)
            if ids.series_uid:
                lost.setdefault(ids.series_uid, []).append((ids.sop_uid, path))
        else:
            by_uid.setdefault(header.series_uid, []).append(header)
    series = []
    for headers in by_uid.values():
        built = build_series(_drop_duplicates(headers, skipped))
        if isinstance(built, list):
            skipped.extend(built)
        else:
            kept = {h.sop_uid for h in headers}
            missing = sorted(path for sop_uid, path in lost.get(built.uid, []) if sop_uid not in kept)
            if missing:
                built.warnings.append(f'{len(missing)} file(s) of this series skipped, e.g. '
                                      f'{os.path.basename(missing[0])}: slices missing from the series')
            series.append(built)
    series.sort(key=lambda s: (s.patient_id, s.study_uid, s.uid))
    return series, skipped


def stored_range(ds):
    """(lowest, highest) stored value that BitsStored and PixelRepresentation allow."""
    bits = int(ds.BitsStored)
    return (-2**(bits - 1), 2**(bits - 1) - 1) if ds.get('PixelRepresentation') == 1 else (0, 2**bits - 1)


def _invert_monochrome1(pixels, ds):
    """MONOCHROME1 stored values -> MONOCHROME2: ``lowest + highest - value`` over the stored range
    (``2**BitsStored - 1 - value`` for unsigned data), so that higher is brighter and the range is kept."""
    return sum(stored_range(ds)) - pixels.astype(np.int64)


def _read_frames(path, rows, columns):
    """All frames of one file in frame order -> float32 (frames, rows, columns) in modality units.

    The header is checked again (:func:`mrsr_plugin.mrio.header.header_problem`) before the pixels are decoded:
    the file may have changed since the scan, and a :class:`Series` may come from elsewhere.
    """
    try:
        ds = pydicom.dcmread(path)
    except Exception as err:  # the file may have changed since the scan; pydicom raises many kinds of errors
        raise DicomInputError(path, f'cannot read DICOM file ({type(err).__name__}: {err})') from err
    if _is_truncated(ds, path):
        raise DicomInputError(path, 'truncated file')
    if (ds.get('Rows'), ds.get('Columns')) != (rows, columns):
        raise DicomInputError(path, f'slices of {ds.get("Rows")}x{ds.get("Columns")}, expected {rows}x{columns} '
                              '(rows x columns; did the file change since the scan?)')
    problem = header_problem(ds)
    if problem is not None:
        raise DicomInputError(path, problem)
    transfer_syntax = ds.file_meta.TransferSyntaxUID
    try:
        pixels = ds.pixel_array
    except Exception as err:  # decoder plugins raise many kinds of errors on corrupt or unsupported data
        raise DicomInputError(path, f'cannot decode {transfer_syntax.name} pixel data ({first_line(err)})') from err
    pixels = pixels.reshape(-1, *pixels.shape[-2:])
    if pixels.shape[1:] != (rows, columns):
        raise DicomInputError(path, f'slices of {pixels.shape[1]}x{pixels.shape[2]}, expected {rows}x{columns} '
                              '(rows x columns; did the file change since the scan?)')
    if ds.PhotometricInterpretation == 'MONOCHROME1':
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

    The volume is allocated once the first file has been decoded to the series' slice size, never from header
    values alone.
    """
    volume, filled = None, 0
    for path in series.files:
        frames = _read_frames(path, series.rows, series.columns)
        if filled + len(frames) > series.num_slices:
            raise DicomInputError(path, f'more frames than the scan found in its series ({series.num_slices})')
        if volume is None:
            volume = np.empty((series.num_slices, series.rows, series.columns), np.float32)
        volume[filled:filled + len(frames)] = frames
        filled += len(frames)
    if filled != series.num_slices:
        raise DicomInputError(series.files[-1], f'its series has {filled} frames, the scan found {series.num_slices}')
    return volume


def series_skip_reason(series):
    """The :class:`DicomInputError` message that loading ``series`` raises, or None if it loads."""
    try:
        load_series(series)
    except DicomInputError as err:
        return str(err)
    return None


def describe_skipped(skipped, root, limit=3):
    """Terminal lines for skipped inputs, with paths relative to ``root``: ``skipped PATH: REASON``, except that
    more than ``limit`` files of one folder skipped for one reason make one line ``skipped N files in FOLDER/:
    REASON``."""
    prefix = os.path.join(root, '')

    def relative(text):
        return text.replace(prefix, '') if prefix != os.sep else text

    groups = {}
    for s in skipped:
        groups.setdefault((os.path.dirname(s.path), relative(s.reason)), []).append(s.path)
    lines = []
    for (folder, reason), paths in groups.items():
        if len(paths) > limit:
            lines.append(f'skipped {len(paths)} files in {relative(os.path.join(folder, "")) or "./"}: {reason}')
        else:
            lines += [f'skipped {relative(path)}: {reason}' for path in paths]
    return lines


def print_skipped(skipped, root, notes=()):
    """:func:`describe_skipped`'s lines, then ``notes``, on stderr."""
    for line in [*describe_skipped(skipped, root), *notes]:
        print(line, file=sys.stderr)


def single_channel(img):
    """(H, W) or (H, W, C) from OpenCV -> (H, W), or None for colour. Grey stored as equal B, G, R channels is
    reduced to one; an alpha channel is ignored."""
    if img.ndim == 2:
        return img
    colour = img[..., :3]
    if colour.shape[-1] == 3 and (colour == colour[..., :1]).all():
        return colour[..., 0]
    return None


def read_image(path):
    """One PNG/TIFF slice -> (H, W) uint8 or uint16 as stored, or the reason it cannot be used (a str)."""
    try:
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    except Exception as err:  # OpenCV's decoders may raise on a corrupt file instead of returning None
        return f'unreadable image ({type(err).__name__}: {first_line(err)})'
    if img is None:
        return 'unreadable image'
    if img.dtype not in (np.uint8, np.uint16):
        return f'unsupported pixel type {img.dtype}; expected 8- or 16-bit'
    grey = single_channel(img)
    return COLOUR_IMAGE if grey is None else grey


def list_image_files(root, skipped):
    """The PNG/TIFF files under ``root`` (recursively, sorted, links followed) as (name, path) pairs, without reading
    them: name is the path relative to ``root`` without extension, with '/' separators. A second file of the same
    name (``a.png`` and ``a.tif``) goes to ``skipped``."""
    files, source_of = [], {}
    for path in walk_files(root, skipped):
        if not path.lower().endswith(IMAGE_EXTENSIONS):
            continue
        name = os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, '/')
        if name in source_of:
            skipped.append(Skipped(path, f'same name as {source_of[name]} (keys must be unique)'))
        else:
            source_of[name] = path
            files.append((name, path))
    return files


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
    images, skipped = [], []
    for name, path in list_image_files(root, skipped):
        img = read_image(path)
        if isinstance(img, str):
            skipped.append(Skipped(path, img, fault=img != COLOUR_IMAGE))
        else:
            images.append((name, img))
    return images, skipped
