"""Build the embedded demo dataset ``datasets/demo_mr`` from real MR slices that ship with ``pydicom-data`` (MIT).

train: 128x128 HR tiles of a 1024x1024 shoulder slice (MR2_UNCR.dcm) that hold anatomy, not air;
val:   the whole 484x484 axial abdomen slice of another patient (MR-SIEMENS-DICOM-WithOverlays.dcm).
Each slice is scaled to [0, 255] between its 0.5th and 99.5th intensity percentiles and saved as 8-bit grey PNG;
LR images are BasicSR's MATLAB-style bicubic down-sampling (x2, x4) of the HR ones. The output is committed, so
users need neither this script nor pydicom-data; run it to rebuild: ``python scripts/make_demo_data.py``.
"""
import argparse
import os
import shutil
import sys
import tempfile

import cv2
import numpy as np

SOURCES = {'train': 'MR2_UNCR.dcm', 'val': 'MR-SIEMENS-DICOM-WithOverlays.dcm'}
TILE = 128
SCALES = (2, 4)


def load_normalised(filename):
    """Real MR slice from pydicom-data as float32 in [0, 1], (H, W)."""
    import pydicom
    try:
        import data_store  # the pydicom-data package
    except ImportError:
        sys.exit('make_demo_data: needs the pydicom-data package: pip install pydicom-data')
    path = os.path.join(os.path.dirname(data_store.__file__), 'data', filename)
    pixels = pydicom.dcmread(path).pixel_array.astype(np.float32)
    lo, hi = np.percentile(pixels, (0.5, 99.5))
    return np.clip((pixels - lo) / (hi - lo), 0, 1)


def foreground_tiles(image, tile, min_mean=0.15):
    """Non-overlapping (tile, tile) crops whose mean intensity shows anatomy rather than air."""
    h, w = image.shape
    return [image[y:y + tile, x:x + tile] for y in range(0, h - tile + 1, tile) for x in range(0, w - tile + 1, tile)
            if image[y:y + tile, x:x + tile].mean() >= min_mean]


def write_pairs(images, split_dir):
    from basicsr.utils.matlab_functions import imresize
    for sub in ['HR'] + [f'LR_bicx{s}' for s in SCALES]:
        os.makedirs(os.path.join(split_dir, sub))
    for i, hr in enumerate(images):
        name = f'{i:04d}.png'
        cv2.imwrite(os.path.join(split_dir, 'HR', name), np.round(hr * 255).astype(np.uint8))
        for s in SCALES:
            lr = np.clip(imresize(hr, 1 / s), 0, 1)
            cv2.imwrite(os.path.join(split_dir, f'LR_bicx{s}', name), np.round(lr * 255).astype(np.uint8))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__), '..', 'datasets', 'demo_mr'))
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    tmp = tempfile.mkdtemp(prefix='.demo_mr.', dir=os.path.dirname(out))
    try:
        write_pairs(foreground_tiles(load_normalised(SOURCES['train']), TILE), os.path.join(tmp, 'train'))
        val = load_normalised(SOURCES['val'])
        write_pairs([val[:val.shape[0] // 4 * 4, :val.shape[1] // 4 * 4]], os.path.join(tmp, 'val'))
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for split in SOURCES:
        print(f'{split}: {len(os.listdir(os.path.join(out, split, "HR")))} HR images in {out}/{split}')


if __name__ == '__main__':
    main()
