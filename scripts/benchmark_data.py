"""Training-data throughput: samples per second from LMDB, PNG folders and direct DICOM reading.

Each source feeds the same training samples (random gt_size HR crop, LR at --scale, flips and rotations) through a
torch DataLoader with 0 and 2 workers. Without --input the data are the embedded real prostate T2 series of
datasets/prostate3t (5 patients, 97 slices of 384x384), prepared with scripts/lmdb_prepare.py. The direct DICOM
source reads each slice with pydicom, normalises it with the volume's window and degrades it on the fly: what
training without preparation would cost.

    python scripts/benchmark_data.py [--input DICOM_TREE] [--gt-size 128] [--scale 4] [--samples 512]
"""
import argparse
import json
import os
import random
import sys
import tempfile
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

HERE = os.path.dirname(os.path.abspath(__file__))
PROSTATE3T = os.path.join(HERE, '..', 'datasets', 'prostate3t')


class DicomSliceDataset(Dataset):
    """Reads one DICOM slice per sample, normalises with its volume's window, crops, degrades on the fly."""

    def __init__(self, series, windows, gt_size, scale):
        self.items = [(f, window) for s, window in zip(series, windows) for f in s.files]
        self.gt_size, self.scale = gt_size, scale

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        import pydicom
        from basicsr.data.transforms import augment
        from pydicom.pixels import apply_modality_lut

        from mrsr_plugin.data.degradations import bicubic_downsample
        path, (low, high) = self.items[index]
        ds = pydicom.dcmread(path)
        img = np.clip((apply_modality_lut(ds.pixel_array, ds) - low) / (high - low), 0, 1).astype(np.float32)
        top, left = (random.randint(0, n - self.gt_size) for n in img.shape)
        gt = img[top:top + self.gt_size, left:left + self.gt_size]
        lq = bicubic_downsample(gt, self.scale)
        gt, lq = augment([gt[..., None], lq[..., None]], True, True)
        return {'gt': torch.from_numpy(np.ascontiguousarray(gt.transpose(2, 0, 1))),
                'lq': torch.from_numpy(np.ascontiguousarray(lq.transpose(2, 0, 1)))}


def throughput(dataset, workers, batch, samples):
    """Median samples/s over 3 passes of ``samples`` samples, after one warm-up batch per pass."""
    rates = []
    for _ in range(3):
        sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=samples + batch)
        loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True)
        iterator = iter(loader)
        next(iterator)
        start, count = time.perf_counter(), 0
        for item in iterator:
            count += item['gt'].shape[0]
        rates.append(count / (time.perf_counter() - start))
    return float(np.median(rates))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--input', default=PROSTATE3T, help='DICOM tree (default: the embedded prostate patients)')
    parser.add_argument('--gt-size', type=int, default=128, help='HR training crop (the option files: 128)')
    parser.add_argument('--scale', type=int, default=4)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--samples', type=int, default=512, help='samples per timed pass')
    parser.add_argument('--json', help='also write the results here')
    args = parser.parse_args()

    import mrsr_plugin  # noqa: F401  registers the dataset when basicsr is imported
    from basicsr.data import build_dataset

    from mrsr_plugin.mrio.dicom import load_series, scan_dicom_tree
    from mrsr_plugin.cli.prepare import main as prepare_main
    from mrsr_plugin.mrio.intensity import normalise

    with tempfile.TemporaryDirectory() as tmp:
        source = args.input
        prepared = os.path.join(tmp, 'prepared')
        prepare_main([source, prepared, '--scales', str(args.scale), '--png', '--quiet', '--split-ratio', '1', '0',
                      '0', '--plane', 'any', '--series-pattern', ''])
        train = os.path.join(prepared, 'train')
        common = {'name': 'bench', 'type': 'ProstateMRPairedDataset', 'phase': 'train', 'scale': args.scale,
                  'gt_size': args.gt_size, 'use_hflip': True, 'use_rot': True}
        sources = {
            'lmdb': build_dataset(dict(common, io_backend={'type': 'lmdb'}, dataroot_gt=f'{train}/HR.lmdb',
                                       dataroot_lq=f'{train}/LR_x{args.scale}.lmdb')),
            'png folder': build_dataset(dict(common, io_backend={'type': 'disk'}, dataroot_gt=f'{train}/HR',
                                             dataroot_lq=f'{train}/LR_x{args.scale}')),
        }
        series = scan_dicom_tree(source)[0]
        windows = [normalise(load_series(s), 'percentile', (0.5, 99.5))[1] for s in series]
        sources['dicom (on the fly)'] = DicomSliceDataset(series, windows, args.gt_size, args.scale)

        results = {'torch': torch.__version__, 'threads': torch.get_num_threads(), 'gt_size': args.gt_size,
                   'scale': args.scale, 'batch': args.batch, 'slices': len(sources['lmdb']), 'samples_per_s': {}}
        print(f'{len(sources["lmdb"])} slices, HR crop {args.gt_size}, x{args.scale}, batch {args.batch}, '
              f'torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs')
        print(f'{"source":<20} {"workers":>7} {"samples/s":>10}')
        for name, dataset in sources.items():
            for workers in (0, 2):
                rate = throughput(dataset, workers, args.batch, args.samples)
                results['samples_per_s'][f'{name}, {workers} workers'] = round(rate, 1)
                print(f'{name:<20} {workers:>7} {rate:>10.1f}')
                sys.stdout.flush()
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
