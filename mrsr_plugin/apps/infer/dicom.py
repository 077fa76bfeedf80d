"""DICOM output of inference: one derived series per source series, one output file per input file.

Intensities: modality units back to the source's stored values (:func:`to_stored`).

Geometry of a derived slice at scale s. PixelSpacing is [dr, dc]: dr between rows, along the column direction
Y = ImageOrientationPatient[3:]; dc between columns, along the row direction X = ImageOrientationPatient[:3]. Pixel
(row i, column j) is centred at P + j * dc * X + i * dr * Y, and the slice extends half a pixel beyond the outer
centres. The new grid keeps those outer edges: spacing [dr / s, dc / s], Rows and Columns times s, and first pixel
centre ``P' = P - (s - 1) / (2 s) * (dc * X + dr * Y)``; each source pixel is covered by the s x s new pixels centred
on it, as pixel shuffle and bicubic down-sampling assume (:func:`update_geometry`).

Through-plane (:func:`write_dicom_through_plane_job`): n slices become s (n - 1) + 1 single-frame files on the
kept-slice grid, each with the header of its nearest source slice, SeriesNumber the source's + 1000 * s + 500; see
docs/through-plane.md. Multi-frame (enhanced) files stay multi-frame, their functional groups updated like a classic
header. The output keeps the source's patient, study and frame of reference identifiers, so that it stays in its
study; it gets a new SeriesInstanceUID, SeriesNumber (:func:`derived_series_number`) and SOPInstanceUIDs.
"""
import copy
import os

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from mrsr_plugin.mrio.dicom import DicomInputError, frame_attribute, functional_group, load_series, stored_range
from mrsr_plugin.data.mr_image import encode_png, quantize
from mrsr_plugin.mrio.intensity import normalise
from mrsr_plugin.apps.through_plane import (check_acquisition, dicom_acquisition, dicom_slice_geometry,
                                           super_resolve_consistently)
from mrsr_plugin.version import __version__

# elements that describe the source's pixels or grid and no longer fit: min/max values, padding, icon, signatures
REMOVED_KEYWORDS = ('SmallestImagePixelValue', 'LargestImagePixelValue', 'SmallestPixelValueInSeries',
                    'LargestPixelValueInSeries', 'PixelPaddingValue', 'PixelPaddingRangeLimit', 'IconImageSequence',
                    'DigitalSignaturesSequence', 'MACParametersSequence', 'ExtendedOffsetTable',
                    'ExtendedOffsetTableLengths')
DTYPES = {(8, 0): np.uint8, (8, 1): np.int8, (16, 0): np.uint16, (16, 1): np.int16}  # (BitsAllocated, PixelRep.)


# --- intensities -----------------------------------------------------------------------------------------------------


def to_stored(values, ds, frame=0):
    """Modality values of ``frame`` of ``ds`` -> stored pixel values: the inverse of ``load_series``.

    Inverse RescaleSlope/Intercept (per frame in enhanced files), MONOCHROME1 inverted back over the stored range,
    rounded, clipped to the BitsStored range and cast to the dtype of BitsAllocated / PixelRepresentation.

    Args:
        values (ndarray): (H, W) in modality units.
        ds (Dataset): The source file's header.
        frame (int): Frame index, for enhanced multi-frame files. Default: 0.

    Returns:
        ndarray: (H, W) uint8, int8, uint16 or int16.
    """
    dtype = DTYPES.get((int(ds.BitsAllocated), int(ds.get('PixelRepresentation') or 0)))
    if dtype is None:
        raise DicomInputError(f'{ds.filename}: {ds.BitsAllocated}-bit pixels are not supported (8 or 16 bits)')
    if ds.get('ModalityLUTSequence'):
        raise DicomInputError(f'{ds.filename}: a Modality LUT Sequence cannot be inverted; only RescaleSlope/'
                              'RescaleIntercept are supported')
    item = functional_group(ds, frame, 'PixelValueTransformationSequence') or ds
    stored = np.asarray(values, np.float64)
    if 'RescaleSlope' in item and 'RescaleIntercept' in item:  # as pydicom's apply_modality_lut
        stored = (stored - float(item.RescaleIntercept)) / float(item.RescaleSlope)
    lowest, highest = stored_range(ds)
    if ds.get('PhotometricInterpretation') == 'MONOCHROME1':
        stored = (lowest + highest) - stored
    return np.clip(np.round(stored), lowest, highest).astype(dtype)


# --- DICOM output ----------------------------------------------------------------------------------------------------


def _derived(image_type):
    """ImageType / FrameType -> DERIVED\\SECONDARY followed by the source's values after the first two."""
    values = [image_type] if isinstance(image_type, str) else list(image_type or [])
    return ['DERIVED', 'SECONDARY', *values[2:]]


def _ds_values(values):
    return [DSfloat(float(v), auto_format=True) for v in values]


def update_geometry(ds, scale):
    """Divide PixelSpacing by ``scale`` and move ImagePositionPatient to the new first pixel centre (see the module
    docstring), in the header and in the shared / per-frame functional groups of enhanced files.

    Positions without both ImageOrientationPatient and PixelSpacing stay as they are.
    """
    positions, spacings = {}, {}
    for frame in range(int(ds.get('NumberOfFrames') or 1)):
        position = functional_group(ds, frame, 'PlanePositionSequence') or ds
        measures = functional_group(ds, frame, 'PixelMeasuresSequence') or ds
        orientation = frame_attribute(ds, frame, 'PlaneOrientationSequence', 'ImageOrientationPatient')
        if measures.get('PixelSpacing'):
            spacings[id(measures)] = measures
            if position.get('ImagePositionPatient') and orientation and id(position) not in positions:
                row_dir, col_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
                row_spacing, col_spacing = (float(v) for v in measures.PixelSpacing)
                shift = (scale - 1) / (2 * scale) * (col_spacing * row_dir + row_spacing * col_dir)
                positions[id(position)] = position, np.asarray(position.ImagePositionPatient, float) - shift
    for item, new_position in positions.values():
        item.ImagePositionPatient = _ds_values(new_position)
    for item in spacings.values():
        item.PixelSpacing = _ds_values(float(v) / scale for v in item.PixelSpacing)


def derived_series_number(number, scale):
    """SeriesNumber of the x``scale`` series derived from series ``number`` (None or '' if it has none): number +
    1000 * scale, so that the source and its x2, x3 and x4 series differ; 1000 * scale where the source has none or
    the sum would not fit in an IS (a signed 32-bit integer)."""
    derived = int(number or 0) + 1000 * scale
    return derived if derived < 2**31 else 1000 * scale


def derive_dataset(ds, values, scale, series_uid, description, derivation):
    """The derived file of one source file.

    Args:
        ds (Dataset): The source file's header, read without pixel data; modified in place and returned.
        values (ndarray): (F, s*H, s*W) super-resolved frames in modality units.
        scale (int): Upscale factor.
        series_uid (str): SeriesInstanceUID of the new series.
        description (str): Its SeriesDescription.
        derivation (str): DerivationDescription.

    Returns:
        Dataset: With Explicit VR Little Endian file meta, a new SOPInstanceUID (also the file meta's
        MediaStorageSOPInstanceUID), SeriesNumber :func:`derived_series_number`, the source's bit layout.
    """
    stored = np.stack([to_stored(frame_values, ds, i) for i, frame_values in enumerate(values)])
    source_ref = Dataset()
    source_ref.ReferencedSOPClassUID, source_ref.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    for tag in list(ds.keys()):  # overlays (60xx) and curves (50xx) lie on the source grid
        if (0x6000 <= tag.group <= 0x60FF or 0x5000 <= tag.group <= 0x50FF) and tag.group % 2 == 0:
            del ds[tag]
    for keyword in REMOVED_KEYWORDS:
        if keyword in ds:
            delattr(ds, keyword)
    update_geometry(ds, scale)
    ds.ImageType = _derived(ds.get('ImageType'))
    for groups in ('SharedFunctionalGroupsSequence', 'PerFrameFunctionalGroupsSequence'):
        for group in ds.get(groups) or []:
            for frame_type in group.get('MRImageFrameTypeSequence') or []:
                frame_type.FrameType = _derived(frame_type.get('FrameType'))
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = derived_series_number(ds.get('SeriesNumber'), scale)
    ds.SeriesDescription = description
    ds.DerivationDescription = derivation
    ds.SourceImageSequence = [source_ref]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    # a 3-D array keeps NumberOfFrames even for one frame, as enhanced files need
    ds.set_pixel_data(stored if 'NumberOfFrames' in ds else stored[0], ds.PhotometricInterpretation, int(ds.BitsStored),
                      generate_instance_uid=False)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def write_dicom_job(folder, job, upscaler, args, weights_name, arch):
    """Load, normalise and super-resolve one series; write its files into ``folder`` as they complete."""
    series, s = job.series, upscaler.scale
    slices, (low, high) = _normalised(load_series(series), args, series.files[0])
    suffix = f' SRx{s}'
    description = series.description[:64 - len(suffix)] + suffix  # LO: 64 characters
    window = f'{args.normalize} {args.percentiles[0]:g}/{args.percentiles[1]:g}' if (
        args.normalize == 'percentile') else args.normalize
    derivation = (f'Super-resolution x{s}: {arch}, weights {weights_name}, mrsr_plugin {__version__}; intensities '
                  f'normalised to the window [{low:.6g}, {high:.6g}] ({window}), super-resolved and mapped back; '
                  'intensities outside the window interpolated bilinearly')
    series_uid = generate_uid()
    headers = (pydicom.dcmread(path, stop_before_pixels=True) for path in series.files)
    src, number, done, pending = next(headers), 1, 0, []
    if args.png:
        os.makedirs(os.path.join(folder, 'png'))
    for batch in upscaler.batches(slices, job.label, args.quiet):
        pending.extend(batch)
        if args.png:
            for i, img in enumerate(batch, done + 1):
                with open(os.path.join(folder, 'png', f'{i:04d}.png'), 'wb') as f:
                    f.write(encode_png(quantize(img, args.png_bit_depth or 16)))
        done += len(batch)
        while src is not None and len(pending) >= int(src.get('NumberOfFrames') or 1):
            frames = int(src.get('NumberOfFrames') or 1)
            values = low + np.stack(pending[:frames]).astype(np.float64) * (high - low)
            ds = derive_dataset(src, values, s, series_uid, description, derivation)
            pydicom.dcmwrite(os.path.join(folder, f'IM{number:04d}.dcm'), ds, enforce_file_format=True)
            del pending[:frames]
            src, number = next(headers, None), number + 1


def _normalised(volume, args, first_file):
    try:
        return normalise(volume, args.normalize, args.percentiles, clip=False)
    except ValueError as err:
        raise DicomInputError(f'{first_file}: {err}') from err


def through_plane_derivation(scale, arch, weights_name, low, high, notes):
    """DerivationDescription of a through-plane output: the network, the window, the data-consistency step."""
    consistency = (f'acquired slices enforced by data consistency (profile NRMSE {notes["data_consistency_nrmse"]:.2g})'
                   if notes['data_consistency'] else
                   f'no data consistency (profile NRMSE {notes["data_consistency_nrmse"]:.2g})')
    return (f'Through-plane super-resolution x{scale} (sagittal and coronal reformats, mean): {arch}, weights '
            f'{weights_name}, mrsr_plugin {__version__}; intensities normalised to [{low:.6g}, {high:.6g}]; '
            f'{consistency}')[:1024]  # ST


def write_dicom_through_plane_job(folder, job, upscaler, config, args, weights_name, arch, notes=None):
    """Load, normalise and super-resolve one series along its slice axis (``config``: the model's
    :class:`~mrsr_plugin.data.slice_profile.ThroughPlaneConfig`); write the new series into ``folder``, one
    single-frame file per output slice (module docstring).

    The series' slice geometry (:func:`~mrsr_plugin.apps.through_plane.dicom_acquisition`; ``args.slice_thickness``
    where it has no SliceThickness) must fit the model's unless ``args.force``, which writes the warning into
    SeriesDescription (`` FORCED``) and ImageComments. ``notes`` (a dict) receives the warning, the geometry and
    the data-consistency measures for the report."""
    series = job.series
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in series.files]
    if series.num_slices < 2 or any(int(ds.get('NumberOfFrames') or 1) > 1 for ds in headers):
        raise DicomInputError(f'{series.files[0]}: through-plane super-resolution needs a series of two or more '
                              'single-frame slices')
    if not all(ds.get('ImagePositionPatient') for ds in headers):
        raise DicomInputError(f'{series.files[0]}: a slice without ImagePositionPatient: no slice positions')
    try:
        acquisition = dicom_acquisition(headers, args.slice_thickness)
        warning = check_acquisition(acquisition, config, args.force)
    except ValueError as err:
        raise DicomInputError(series.files[0], str(err)) from err
    scale = config.scale
    slices, (low, high) = _normalised(load_series(series), args, series.files[0])
    out, measures = super_resolve_consistently(upscaler, slices, config, args.data_consistency,
                                               desc='' if args.quiet else job.label)
    values = low + out.astype(np.float64) * (high - low)
    notes = {} if notes is None else notes
    notes.update(input_geometry=str(acquisition), **measures, **({'geometry_warning': warning} if warning else {}))
    locations = [ds.get('SliceLocation') for ds in headers]
    geometry = dicom_slice_geometry([ds.ImagePositionPatient for ds in headers], scale,
                                    None if None in locations else locations)
    suffix = f' SRz{scale}' + (' FORCED' if warning and 'mismatch' in warning else '')
    description = series.description[:64 - len(suffix)] + suffix
    derivation = through_plane_derivation(scale, arch, weights_name, low, high, measures)
    series_uid = generate_uid()
    for k, slice_values in enumerate(values):
        ds = derive_dataset(copy.deepcopy(headers[round(k / scale)]), slice_values[None], 1, series_uid, description,
                            derivation)
        ds.SeriesNumber = derived_series_number(headers[0].get('SeriesNumber'), scale) + 500
        ds.ImagePositionPatient = _ds_values(geometry['positions'][k])
        if geometry['slice_locations'] is not None:
            ds.SliceLocation = DSfloat(float(geometry['slice_locations'][k]), auto_format=True)
        ds.SliceThickness = ds.SpacingBetweenSlices = DSfloat(geometry['thickness'], auto_format=True)
        ds.InstanceNumber = k + 1
        if warning:
            ds.ImageComments = f'warning: {warning}'
        pydicom.dcmwrite(os.path.join(folder, f'IM{k + 1:04d}.dcm'), ds, enforce_file_format=True)
