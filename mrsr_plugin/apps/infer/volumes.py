"""Volume output of inference: a NIfTI, MetaImage or NRRD file in, the same format out, every slice super-resolved
in-plane.

Output: ``OUT/<folder relative to the input>/<stem>_SRx<s><extension>`` (``<stem>_c<k>_SRx<s>...`` for channel k of
a multi-channel file), written atomically by :func:`mrsr_plugin.mrio.volume.write_volume`. The slices are the
file's third image axis (:mod:`mrsr_plugin.mrio.volume`); rows and columns grow s times and the geometry keeps
the volume's outer edges, as the DICOM path does (:func:`mrsr_plugin.mrio.volume.refined_geometry` with factors
(s, s, 1): spacing / s along image axes x and y, origin moved by ``-(s - 1) / (2 s) * spacing`` along each). The
intensities are normalised per volume as DICOM series are, mapped back to the source's units and written in its
pixel type (real types kept, integer types rounded and clipped to their range) with its metadata.

Through-plane (:func:`write_volume_through_plane_job`, ``<stem>_SRz<s>``): n slices become s (n - 1) + 1 on the
kept-slice grid (:func:`mrsr_plugin.apps.through_plane.volume_geometry`: origin and direction kept, the slice spacing
divided by s).
"""
import os

import numpy as np

from mrsr_plugin.mrio.intensity import normalise
from mrsr_plugin.mrio.volume import (VolumeInputError, read_volume, refined_geometry, volume_extension,
                                        volume_stem, write_volume)
from mrsr_plugin.apps.through_plane import super_resolve_through_plane, volume_geometry


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


def write_volume_through_plane_job(path, header, upscaler, scale, args, label):
    """Read, normalise and super-resolve the volume of ``header`` along its slice axis (x ``scale``); write it to
    ``path``; returns ``path``. VolumeInputError: this volume cannot be read, normalised or has under 2 slices."""
    volume, slices, (low, high) = _read_normalised(header, args)
    if len(slices) < 2:
        raise VolumeInputError(header.path, 'through-plane super-resolution needs two or more slices')
    values = low + super_resolve_through_plane(upscaler, slices, scale, desc='' if args.quiet else label).astype(
        np.float64) * (high - low)
    spacing, origin, _, _ = volume_geometry(volume.spacing, volume.origin, np.ravel(volume.direction),
                                            volume.array.shape[::-1], scale)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return write_volume(path, values, volume, spacing, origin)
