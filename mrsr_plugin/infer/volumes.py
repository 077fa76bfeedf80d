"""Volume output of inference: a NIfTI, MetaImage or NRRD file in, the same format out, every slice super-resolved
in-plane.

Output: ``OUT/<folder relative to the input>/<stem>_SRx<s><extension>`` (``<stem>_c<k>_SRx<s>...`` for channel k of
a multi-channel file), written atomically by :func:`mrsr_plugin.data.volume_io.write_volume`. The slices are the
file's third image axis (:mod:`mrsr_plugin.data.volume_io`); rows and columns grow s times and the geometry keeps
the volume's outer edges, as the DICOM path does (:func:`mrsr_plugin.data.volume_io.refined_geometry` with factors
(s, s, 1): spacing / s along image axes x and y, origin moved by ``-(s - 1) / (2 s) * spacing`` along each). The
intensities are normalised per volume as DICOM series are, mapped back to the source's units and written in its
pixel type (real types kept, integer types rounded and clipped to their range) with its metadata.
"""
import os

import numpy as np

from mrsr_plugin.data.prepare import normalise
from mrsr_plugin.data.volume_io import (VolumeInputError, read_volume, refined_geometry, volume_extension,
                                        volume_stem, write_volume)


def output_name(header, scale):
    """``<stem>[_c<k>]_SRx<s><extension>`` of a :class:`mrsr_plugin.data.volume_io.VolumeHeader`."""
    channel = '' if header.channel is None else f'_c{header.channel}'
    return f'{volume_stem(header.path)}{channel}_SRx{scale}{volume_extension(header.path)}'


def write_volume_job(path, header, upscaler, args, label):
    """Read, normalise and super-resolve the volume of ``header`` (the channel it chose); write it to ``path``.

    Returns:
        str: ``path``.

    Raises:
        VolumeInputError: The volume cannot be read or normalised (this volume is skipped, not the run).
    """
    volume = read_volume(header.path, header.channel)
    try:
        slices, (low, high) = normalise(volume.array, args.normalize, args.percentiles, clip=False)
    except ValueError as err:
        raise VolumeInputError(header.path, str(err)) from err
    s, (z, h, w) = upscaler.scale, volume.array.shape
    values, done = np.empty((z, s * h, s * w), volume.array.dtype), 0
    for batch in upscaler.batches(slices, label, args.quiet):
        values[done:done + len(batch)] = low + batch.astype(np.float64) * (high - low)
        done += len(batch)
    spacing, origin = refined_geometry(volume, (s, s, 1))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return write_volume(path, values, volume, spacing, origin)
