"""PNG/TIFF output of inference: slices exported from a viewer in, 8- or 16-bit PNG out.

The slices of a folder are normalised per sub-folder, size and bit depth (:func:`write_image_job`); each such group
is one input, skipped alone when it fails. The output keeps their relative paths, as ``.png``.
"""
import os

import numpy as np

from mrsr_plugin.errors import InputFileError, MRSRUserError, first_line, isolate
from mrsr_plugin.mrio.dicom import read_image
from mrsr_plugin.data.mr_image import encode_png, quantize
from mrsr_plugin.mrio.intensity import normalise


def write_image_job(folder, job, upscaler, args, failed=None):
    """Super-resolve PNG/TIFF slices, normalised per folder, size and bit depth; write PNGs into ``folder``.

    Each such group is one input: whatever goes wrong with it (:class:`mrsr_plugin.errors.isolate`) leaves it out,
    appended to ``failed`` as (its folder relative to the input, its number of images, the guard), and the other
    groups go on; when every group fails, the first one's error is raised again.
    """
    groups = {}
    for name, img in job.images:
        groups.setdefault((os.path.dirname(name), img.shape, img.dtype.str), []).append((name, img))
    failed = [] if failed is None else failed
    first_error = None
    for (subfolder, _, _), members in groups.items():
        with isolate(output=folder) as guard:
            _write_group(folder, members, job.label, upscaler, args)
        if guard.error is not None:
            failed.append((subfolder, len(members), guard))
            first_error = first_error or guard.error
    if len(failed) == len(groups):
        raise InputFileError(f'none of the {len(job.images)} images could be super-resolved '
                             f'({first_line(first_error)})')


def _write_group(folder, members, label, upscaler, args):
    """One group of same-size, same-depth images of one folder: normalised together, super-resolved, written."""
    peak = np.iinfo(members[0][1].dtype).max
    try:
        slices, (low, high) = normalise(np.stack([img for _, img in members]).astype(np.float32), args.normalize,
                                        args.percentiles, peak, clip=False)
    except ValueError as err:
        raise InputFileError(str(err)) from err
    bit_depth = args.png_bit_depth or (8 if peak == 255 else 16)
    names, written = iter(name for name, _ in members), []
    try:
        for batch in upscaler.batches(slices, label, args.quiet):
            for img in batch:
                written.append(os.path.join(folder, f'{next(names)}.png'))
                os.makedirs(os.path.dirname(written[-1]), exist_ok=True)
                with open(written[-1], 'wb') as f:
                    f.write(encode_png(quantize((low + img.astype(np.float64) * (high - low)) / peak, bit_depth)))
    except BaseException:  # a group is written whole or not at all
        for path in written:
            if os.path.exists(path):
                os.remove(path)
        raise


def read_image_file(path):
    """One PNG/TIFF file -> (H, W) uint8 or uint16."""
    img = read_image(path)
    if isinstance(img, str):
        raise MRSRUserError(f'{path}: {img}')
    return img
