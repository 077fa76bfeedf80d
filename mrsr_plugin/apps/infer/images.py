"""PNG/TIFF output of inference: slices exported from a viewer in, 8- or 16-bit PNG out.

The slices of a folder are normalised per sub-folder, size and bit depth (:func:`write_image_job`); the output keeps
their relative paths, as ``.png``.
"""
import os

import numpy as np

from mrsr_plugin.errors import MRSRUserError
from mrsr_plugin.mrio.dicom import read_image
from mrsr_plugin.data.mr_image import encode_png, quantize
from mrsr_plugin.mrio.intensity import normalise


def write_image_job(folder, job, upscaler, args):
    """Super-resolve PNG/TIFF slices, normalised per folder, size and bit depth; write PNGs into ``folder``."""
    groups = {}
    for name, img in job.images:
        groups.setdefault((os.path.dirname(name), img.shape, img.dtype.str), []).append((name, img))
    for members in groups.values():
        peak = np.iinfo(members[0][1].dtype).max
        try:
            slices, (low, high) = normalise(np.stack([img for _, img in members]).astype(np.float32),
                                            args.normalize, args.percentiles, peak, clip=False)
        except ValueError as err:
            raise MRSRUserError(f'{members[0][0]}: {err}') from err
        bit_depth = args.png_bit_depth or (8 if peak == 255 else 16)
        names = iter(name for name, _ in members)
        for batch in upscaler.batches(slices, job.label, args.quiet):
            for img in batch:
                path = os.path.join(folder, f'{next(names)}.png')
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, 'wb') as f:
                    f.write(encode_png(quantize((low + img.astype(np.float64) * (high - low)) / peak, bit_depth)))


def read_image_file(path):
    """One PNG/TIFF file -> (H, W) uint8 or uint16."""
    img = read_image(path)
    if isinstance(img, str):
        raise MRSRUserError(f'{path}: {img}')
    return img
