"""Volume files (NIfTI, MetaImage, NRRD) in and out through SimpleITK, with their geometry.

Formats: :data:`VOLUME_EXTENSIONS`. A volume is 3-D; a 4-D file (channels along its fourth axis) or a 3-D file with
several components per voxel is read one channel at a time, chosen by index (see docs/data.md, Volume files).

Geometry is SimpleITK's, in its world coordinates (LPS, as DICOM's patient coordinates, whatever the format stores;
SimpleITK converts NIfTI's RAS): image axes x, y, z (columns, rows, slices of the (z, y, x) array); voxel (i, j, k)
is centred at ``origin + direction @ (spacing * (i, j, k))``, ``direction``'s columns being the axes' unit vectors.
Slices are the array's first index, the file's third image axis (axial for the usual axial NIfTI), taken as stored:
no reorientation, so a slice's rows and columns follow image axes y and x as a DICOM slice's follow its
ImageOrientationPatient.

Errors: a file that cannot be used raises :class:`VolumeInputError` naming it with one short reason; a NIfTI file's
length is checked before reading, since ITK reads a short one without complaint, and what native code prints while
reading (MetaIO writes its errors to the terminal) is captured into the reason.
"""
import contextlib
import ctypes
import gzip
import os
import re
import shutil
import sys
import tempfile
import zlib
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from mrsr_plugin.errors import MRSRUserError, VolumeInputError
from mrsr_plugin.mrio.dicom import walk_files
from mrsr_plugin.fsutil import make_staging

VOLUME_EXTENSIONS = ('.nii.gz', '.nii', '.mha', '.mhd', '.nrrd', '.nhdr')
# SimpleITK scalar pixel types and their NumPy dtypes; others (complex, label maps) are refused
PIXEL_DTYPES = {
    sitk.sitkUInt8: np.uint8, sitk.sitkInt8: np.int8, sitk.sitkUInt16: np.uint16, sitk.sitkInt16: np.int16,
    sitk.sitkUInt32: np.uint32, sitk.sitkInt32: np.int32, sitk.sitkUInt64: np.uint64, sitk.sitkInt64: np.int64,
    sitk.sitkFloat32: np.float32, sitk.sitkFloat64: np.float64
}
# metadata not copied to a written volume: ITK's own bookkeeping and the source's layout, scaling and geometry
# (the writer derives them from the image; NIfTI's intensity range cal_min/cal_max would be stale)
LAYOUT_KEYS = re.compile(r'ITK_.*|NRRD_kinds\[\d+\]|(pix)?dim\[\d\]|srow_[xyz]|qoffset_[xyz]|quatern_[bcd]|qto_xyz|'
                         r'qfac|scl_slope|scl_inter|datatype|bitpix|vox_offset|nifti_type|cal_min|cal_max|dim_info|'
                         r'toffset|slice_(code|duration|start|end)')
CHUNK = 1 << 22  # bytes per read when measuring a gzip stream


@dataclass
class VolumeHeader:
    """What a volume file's header says, after the channel choice (:func:`read_volume_header`)."""
    path: str
    shape: tuple  # (z, y, x): slices, rows, columns
    channels: int  # in the file: size of the fourth axis, or components per voxel; 1 for a plain 3-D file
    channel: int | None  # the one read, None for a single-channel file
    spacing: np.ndarray  # (3,) mm along image axes x, y, z
    origin: np.ndarray  # (3,) world position (mm) of voxel (0, 0, 0)'s centre
    direction: np.ndarray  # (3, 3), column k the unit vector of image axis k

    @property
    def plane(self):
        """'axial', 'coronal' or 'sagittal': the patient axis closest to the slices' normal (as
        :attr:`mrsr_plugin.mrio.dicom.Series.plane`)."""
        normal = np.abs(np.cross(self.direction[:, 0], self.direction[:, 1]))
        return ('sagittal', 'coronal', 'axial')[int(np.argmax(normal))]


@dataclass(kw_only=True)
class Volume(VolumeHeader):
    """One channel of a volume file: its voxels and what writing a derived volume needs (:func:`write_volume`)."""
    array: np.ndarray  # (z, y, x) float32 (float64 for 32- and 64-bit integer and float64 sources)
    pixel_id: int  # the source's SimpleITK scalar pixel type (a key of PIXEL_DTYPES)
    metadata: dict = field(default_factory=dict)  # the source's metadata dictionary

    @property
    def dtype(self):
        return np.dtype(PIXEL_DTYPES[self.pixel_id])


def volume_extension(path):
    """The :data:`VOLUME_EXTENSIONS` entry ``path`` ends with (case-insensitive), or None."""
    return next((ext for ext in VOLUME_EXTENSIONS if path.lower().endswith(ext)), None)


def volume_stem(path):
    """File name without its volume extension: ``a/prostate_00.nii.gz`` -> ``prostate_00``."""
    name = os.path.basename(path)
    return name[:len(name) - len(volume_extension(name) or '')]


def list_volume_files(root):
    """The volume files under ``root``, sorted, as :func:`mrsr_plugin.mrio.dicom.walk_files` finds files (links
    followed, hidden files ignored); what the walk cannot read is left to the DICOM scan to report."""
    return [path for path in walk_files(root, []) if volume_extension(path)]


def data_files(path):
    """The files a detached-header volume (.mhd, .nhdr) names as its data (one, or none where it is LOCAL or
    attached); [] for other formats. Read from the header text, for scans that must not report them as unknown."""
    ext = volume_extension(path)
    if ext not in ('.mhd', '.nhdr'):
        return []
    key = re.compile(r'\s*ElementDataFile\s*=\s*(.+)' if ext == '.mhd' else r'\s*data ?file\s*:\s*(.+)', re.I)
    try:
        with open(path, 'rb') as f:
            head = f.read(65536).decode('latin-1')
    except OSError:
        return []
    for line in head.splitlines():
        match = key.match(line)
        if match:
            name = match.group(1).strip()
            return [] if name.upper() == 'LOCAL' or ' ' in name else [os.path.join(os.path.dirname(path), name)]
    return []


def without_volume_files(skipped, paths):
    """A DICOM scan's ``skipped`` without its notes on the volume files ``paths`` and their data files, which are
    not DICOM but are not skipped either."""
    known = {os.path.abspath(p) for p in paths} | {os.path.abspath(d) for p in paths for d in data_files(p)}
    return [s for s in skipped if os.path.abspath(s.path) not in known]


@contextlib.contextmanager
def _native_output():
    """Capture what native code writes to file descriptors 1 and 2 meanwhile; yields a list that receives its
    lines on exit."""
    lines = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                yield lines
            finally:
                with contextlib.suppress(OSError, AttributeError, TypeError):  # C stdio buffers, where libc is found
                    ctypes.CDLL(None).fflush(None)
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                sink.seek(0)
                lines += sink.read().decode(errors='replace').splitlines()
    finally:
        for fd in saved:
            os.close(fd)


def _itk_reason(err, native, action='read'):
    """One short reason from SimpleITK's exception and what native code printed meanwhile."""
    printed = ' '.join(native)
    match = re.search(r'ideal = (\d+) : actual = (\d+)', printed)
    if 'not read completely' in printed and match:
        return f'truncated image data ({match.group(2)} of {match.group(1)} bytes)'
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith('Exception thrown in SimpleITK')] or ['unknown error']
    detail = re.sub(r'^(ITK ERROR: \w+\(0x[0-9a-f]+\): |sitk::ERROR: |\[nrrd\] \w+: )', '', lines[-1])
    return f'cannot {action} ({detail})'


def _itk_call(call, path, action='read'):
    """``call()`` with native output captured; its RuntimeError becomes one line naming ``path``:
    VolumeInputError when reading, MRSRUserError when writing."""
    with _native_output() as native:
        try:
            return call()
        except RuntimeError as err:
            error = err
    reason = _itk_reason(error, native, action)
    raise (VolumeInputError(path, reason) if action == 'read' else MRSRUserError(f'{path}: {reason}')) from error


def _image_reader(path):
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    _itk_call(reader.ReadImageInformation, path)
    return reader


def _channel_count(path, reader, channel):
    """(channels in the file, the channel to read or None) after checking the dimensionality and the choice."""
    dim, size, components = reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents()
    if dim not in (3, 4):
        raise VolumeInputError(path, f'{dim}-D image ({"x".join(map(str, size))}); a volume must be 3-D, or 4-D with '
                               'channels along its fourth axis')
    if dim == 4 and components > 1:
        raise VolumeInputError(path, f'4-D image with {components} components per voxel; one of the two is supported')
    channels = size[3] if dim == 4 else components
    if channels == 1:
        return 1, None
    if channel is None:
        where = 'along its fourth axis' if dim == 4 else 'per voxel'
        raise VolumeInputError(path, f'{channels} channels {where}; choose one with --volume-channel')
    if not 0 <= channel < channels:
        raise VolumeInputError(path, f'--volume-channel {channel}, but the file has channels 0 to {channels - 1}')
    return channels, channel


def _geometry(image_or_reader, dim):
    """(spacing, origin, direction) of the first three axes."""
    spacing = np.asarray(image_or_reader.GetSpacing(), float)[:3]
    origin = np.asarray(image_or_reader.GetOrigin(), float)[:3]
    direction = np.asarray(image_or_reader.GetDirection(), float).reshape(dim, dim)[:3, :3]
    return spacing, origin, direction


def read_volume_header(path, channel=None):
    """Read a volume file's header only -> :class:`VolumeHeader`; :class:`VolumeInputError` if it cannot be read,
    is not 3-D or 4-D, or has several channels and ``channel`` does not choose one of them."""
    reader = _image_reader(path)
    channels, channel = _channel_count(path, reader, channel)
    size = reader.GetSize()
    spacing, origin, direction = _geometry(reader, reader.GetDimension())
    return VolumeHeader(path, (size[2], size[1], size[0]), channels, channel, spacing, origin, direction)


def _nifti_data_length(path):
    """Bytes in a NIfTI file (decompressed for .nii.gz); VolumeInputError for a broken gzip stream."""
    if not path.lower().endswith('.gz'):
        return os.path.getsize(path)
    try:
        with gzip.open(path, 'rb') as f:
            return sum(len(chunk) for chunk in iter(lambda: f.read(CHUNK), b''))
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise VolumeInputError(path, f'truncated or corrupt gzip data ({err})') from err


def _check_nifti_length(path, reader):
    """ITK reads a NIfTI file shorter than its header says without complaint: check the length first."""
    voxels = int(np.prod(reader.GetSize())) * reader.GetNumberOfComponents()
    item = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID()).GetSizeOfPixelComponent()
    needed = int(float(reader.GetMetaData('vox_offset'))) + voxels * item
    length = _nifti_data_length(path)
    if length < needed:
        raise VolumeInputError(path, f'truncated file ({length} bytes, the header needs {needed})')


def read_volume(path, channel=None):
    """Read one channel of a volume file.

    Args:
        path (str): A file with one of :data:`VOLUME_EXTENSIONS`.
        channel (int): For files with several channels (4-D, or several components per voxel): which one; ignored
            for single-channel files. Default: None.

    Returns:
        Volume: ``array`` (z, y, x) float32 (float64 for 32- and 64-bit integer or float64 sources), in the file's
        units (NIfTI's scl_slope / scl_inter applied by SimpleITK).

    Raises:
        VolumeInputError: See :func:`read_volume_header`; also unreadable or truncated data, unsupported pixel types.
    """
    reader = _image_reader(path)
    channels, channel = _channel_count(path, reader, channel)
    if volume_extension(path) in ('.nii', '.nii.gz'):
        _check_nifti_length(path, reader)
    image = _itk_call(reader.Execute, path)
    dim = image.GetDimension()
    spacing, origin, direction = _geometry(image, dim)
    metadata = {key: image.GetMetaData(key) for key in image.GetMetaDataKeys()}
    if dim == 4:  # the geometry is the first three axes' (above), whatever the fourth axis' direction
        image = sitk.Extract(image, list(image.GetSize())[:3] + [0], [0, 0, 0, channel or 0],
                             sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOIDENTITY)
    elif image.GetNumberOfComponentsPerPixel() > 1:
        image = sitk.VectorIndexSelectionCast(image, channel)
    pixel_id = image.GetPixelID()
    if pixel_id not in PIXEL_DTYPES:
        raise VolumeInputError(path, f'{image.GetPixelIDTypeAsString()} voxels are not supported (integer or '
                               'real scalars)')
    wide = np.dtype(PIXEL_DTYPES[pixel_id]).itemsize >= 4 and pixel_id != sitk.sitkFloat32
    array = sitk.GetArrayFromImage(image).astype(np.float64 if wide else np.float32, copy=False)
    return Volume(path, array.shape, channels, channel, spacing, origin, direction, array=array, pixel_id=pixel_id,
                  metadata=metadata)


def refined_geometry(volume, factors):
    """Spacing and origin of the grid that cuts each voxel of ``volume`` into ``factors`` (along x, y, z) voxels
    and keeps the outer edges: spacing / f, and the first centre moved by ``-(f - 1) / (2 f) * spacing`` along each
    axis (:mod:`mrsr_plugin.apps.infer.dicom`'s rule for DICOM). The array grows to ``f * n`` voxels along each axis.

    Args:
        volume (VolumeHeader): The source grid.
        factors (sequence[float]): (fx, fy, fz); in-plane super-resolution at scale s is (s, s, 1).

    Returns:
        tuple[ndarray, ndarray]: spacing (3,), origin (3,).
    """
    f = np.asarray(factors, float)
    return volume.spacing / f, volume.origin - volume.direction @ ((f - 1) / (2 * f) * volume.spacing)


def to_pixel_type(array, dtype):
    """Values -> ``dtype``: real types cast, integer types rounded and clipped to their range."""
    if np.issubdtype(dtype, np.floating):
        return np.asarray(array).astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.rint(array), info.min, info.max).astype(dtype)


def write_volume(path, array, like, spacing=None, origin=None, direction=None, description=None):
    """Write a volume derived from ``like`` in the format ``path``'s extension names, atomically.

    The voxels take ``like``'s pixel type (:func:`to_pixel_type`) and the file its metadata (but layout, scaling
    and geometry keys, which the writer derives from the image: :data:`LAYOUT_KEYS`); data are compressed
    (zlib / gzip: ``.nii.gz``, compressed ``.mha`` and ``.nrrd``, ``.mhd`` + ``.zraw``, ``.nhdr`` + ``.raw.gz``; a
    plain ``.nii`` stays uncompressed). The files are written into a hidden staging folder beside ``path`` and
    renamed into place, the data file of a detached header before the header, so that a header never names
    missing data; an existing file is replaced.

    Args:
        path (str): Output file with one of :data:`VOLUME_EXTENSIONS`.
        array (ndarray): (z, y, x) in ``like``'s units.
        like (Volume): Source of the pixel type and metadata, and of the geometry not given.
        spacing, origin (ndarray): (3,) each; default: ``like``'s.
        direction (ndarray): (3, 3), columns the axes' unit vectors; default: ``like``'s.
        description (str | None): The file's description (NIfTI ``descrip``, 79 characters kept; ITK's
            ``ITK_FileNotes``); default: ``like``'s.

    Returns:
        str: ``path``.

    Raises:
        MRSRUserError: The writer failed (one line naming ``path``); OSError for file system errors.
    """
    image = sitk.GetImageFromArray(to_pixel_type(array, like.dtype))
    image.SetSpacing([float(v) for v in (like.spacing if spacing is None else spacing)])
    image.SetOrigin([float(v) for v in (like.origin if origin is None else origin)])
    image.SetDirection([float(v) for v in np.ravel(like.direction if direction is None else direction)])
    for key, value in like.metadata.items():
        if not LAYOUT_KEYS.fullmatch(key):
            image.SetMetaData(key, value)
    if description is not None:
        image.SetMetaData('ITK_FileNotes', description[:79])
    folder, name = os.path.split(os.path.abspath(path))
    staging = make_staging(folder, f'.{name}.partial-')
    try:
        _itk_call(lambda: sitk.WriteImage(image, os.path.join(staging, name), useCompression=True), path, 'write')
        for written in sorted(os.listdir(staging), key=lambda n: n == name):  # the header last
            os.replace(os.path.join(staging, written), os.path.join(folder, written))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
