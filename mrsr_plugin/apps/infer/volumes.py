"""Volume output of inference: a NIfTI, MetaImage or NRRD file in, the same format out, every slice super-resolved
in-plane.

Output names, geometry and pixel types: docs/inference.md#volume-files. The geometry keeps the volume's outer edges
as the DICOM path does (:func:`mrsr_plugin.mrio.volume.refined_geometry` with factors (s, s, 1)); the file is
written atomically by :func:`mrsr_plugin.mrio.volume.write_volume`. Through-plane
(:func:`write_volume_through_plane_job`, ``<stem>_SRz<s>``): docs/through-plane.md.
"""
import os

import numpy as np

from mrsr_plugin.mrio.intensity import normalise
from mrsr_plugin.mrio.volume import (VolumeInputError, read_volume, refined_geometry, volume_extension,
                                        volume_stem, write_volume)
from mrsr_plugin.apps.through_plane import (check_acquisition, super_resolve_consistently, volume_acquisition,
                                           volume_geometry)


def output_name(header, tag):
    """``<stem>[_c<k>]_SR<tag><extension>`` of a :class:`mrsr_plugin.mrio.volume.VolumeHeader`; ``tag`` is
    ``x<s>`` (in-plane) or ``z<s>`` (through-plane)."""
    channel = '' if header.channel is None else f'_c{header.channel}'
    return f'{volume_stem(header.path)}{channel}_SR{tag}{volume_extension(header.path)}'


def _read_normalised(header, args):
    """(Volume, its normalised (z, y, x) slices, (low, high) window in its units)."""
    volume = read_volume(header.path, header.channel)
    try:
        return volume, *normalise(volume.array, args.normalize, args.percentiles, clip=False)
    except ValueError as err:
        raise VolumeInputError(header.path, str(err)) from err


def write_volume_job(path, header, upscaler, args, label):
    """Read, normalise and super-resolve the volume of ``header`` (the channel it chose); write it to ``path``.

    Returns:
        str: ``path``.

    Raises:
        VolumeInputError: The volume cannot be read or normalised (this volume is skipped, not the run).
    """
    volume, slices, (low, high) = _read_normalised(header, args)
    s, (z, h, w) = upscaler.scale, volume.array.shape
    values, done = np.empty((z, s * h, s * w), volume.array.dtype), 0
    for batch in upscaler.batches(slices, label, args.quiet):
        values[done:done + len(batch)] = low + batch.astype(np.float64) * (high - low)
        done += len(batch)
    spacing, origin = refined_geometry(volume, (s, s, 1))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return write_volume(path, values, volume, spacing, origin)


def write_volume_through_plane_job(path, header, upscaler, config, args, label, notes=None):
    """Read, normalise and super-resolve the volume of ``header`` along its slice axis (``config``: the model's
    :class:`~mrsr_plugin.data.slice_profile.ThroughPlaneConfig`); write it to ``path``; returns ``path``.

    The slice geometry is the file's spacing along the slice axis and ``args.slice_thickness`` (a volume file has
    no thickness: without the flag it is taken to be the spacing, and the report says so); a mismatch with the
    model's is this volume's skip unless ``args.force``, which writes the warning into the report and the file's
    description (NIfTI ``descrip``). ``notes`` (a dict) receives the geometry, the warning and the data-consistency
    measures.

    Raises:
        VolumeInputError: This volume cannot be read or normalised, has under 2 slices, or a slice geometry the
            model was not trained for.
    """
    volume, slices, (low, high) = _read_normalised(header, args)
    if len(slices) < 2:
        raise VolumeInputError(header.path, 'through-plane super-resolution needs two or more slices')
    acquisition = volume_acquisition(volume.spacing[2], args.slice_thickness)
    try:
        warning = check_acquisition(acquisition, config, args.force)
    except ValueError as err:
        raise VolumeInputError(header.path, str(err)) from err
    out, measures = super_resolve_consistently(upscaler, slices, config, args.data_consistency,
                                               desc='' if args.quiet else label)
    notes = {} if notes is None else notes
    notes.update(input_geometry=str(acquisition), **measures, **({'geometry_warning': warning} if warning else {}))
    values = low + out.astype(np.float64) * (high - low)
    spacing, origin, _, _ = volume_geometry(volume.spacing, volume.origin, np.ravel(volume.direction),
                                            volume.array.shape[::-1], config.scale)
    descrip = f'mrsr SRz{config.scale}' + (f'; warning: {warning}' if warning else '')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return write_volume(path, values, volume, spacing, origin, description=descrip)
