"""DICOM downloads (or folders of PNG/TIFF slices) -> patient-split HR/LR LMDBs that BasicSR reads.

Output layout (``OUT``)::

    OUT/{train,val,test}/HR.lmdb           lossless 16-bit (or 8-bit) single-channel PNGs, BasicSR LMDB layout
    OUT/{train,val,test}/LR_x{s}.lmdb      the same keys, degraded and down-sampled by s
    OUT/{train,val,test}/HR/, LR_x{s}/     the same as PNG files, with --png
    OUT/split.json                         which case went to which split (patients pseudonymised by default)
    OUT/report.json                        what was included, what was skipped and why, and every parameter

The whole tree is built in a hidden sibling folder and renamed into place at the end, so an interrupted run never
leaves an ``OUT`` that looks complete; an existing ``OUT`` is refused unless ``--overwrite``.
"""
import argparse
import hashlib
import json
import math
import os
import re
import sys
from dataclasses import asdict

import numpy as np
import yaml

from mrsr_plugin.compat import MRSRUserError
from mrsr_plugin.data.degradations import DegradationConfig, degrade, rng_for
from mrsr_plugin.data.dicom_io import load_series, read_image_folder, scan_dicom_tree
from mrsr_plugin.data.mr_image import encode_png, quantize
from mrsr_plugin.fsutil import write_atomically

SPLITS = ('train', 'val', 'test')


class LmdbImageWriter:
    """Writes PNG bytes under keys into a new LMDB with BasicSR's ``meta_info.txt`` (``key.png (h,w,c) level``)."""

    def __init__(self, path, map_size, compress_level=1, batch=500):
        import lmdb
        self.env = lmdb.open(path, map_size=map_size)
        self.txn = self.env.begin(write=True)
        self.meta = open(os.path.join(path, 'meta_info.txt'), 'w')
        self.compress_level, self.batch, self.count = compress_level, batch, 0

    def put(self, key, img):
        self.txn.put(key.encode('ascii'), encode_png(img, self.compress_level))
        self.meta.write(f'{key}.png ({img.shape[0]},{img.shape[1]},1) {self.compress_level}\n')
        self.count += 1
        if self.count % self.batch == 0:
            self.txn.commit()
            self.txn = self.env.begin(write=True)

    def close(self):
        self.txn.commit()
        self.env.close()
        self.meta.close()


def normalise(volume, method, percentiles, peak=None, clip=True):
    """(S, H, W) volume -> float64 with the window mapped to [0, 1], and the window's (low, high) intensities.

    percentile: robust window between two intensity percentiles of the whole volume (default 0.5, 99.5);
    minmax: the volume's minimum and maximum; none: divide by ``peak`` (the bit depth's maximum, image inputs only).
    ``clip`` clips the result to [0, 1], as for training data; without it, intensities outside the window map to
    values below 0 or above 1 (inference keeps them).
    """
    if method == 'percentile':
        low, high = (float(v) for v in np.percentile(volume, percentiles))
    elif method == 'minmax':
        low, high = float(volume.min()), float(volume.max())
    elif peak is None:
        raise ValueError('--normalize none applies to PNG/TIFF input only; DICOM needs percentile or minmax')
    else:
        low, high = 0.0, float(peak)
    if high <= low:
        raise ValueError(f'constant intensity {low} within the normalisation window')
    normalised = (np.asarray(volume, np.float64) - low) / (high - low)
    return np.clip(normalised, 0, 1) if clip else normalised, (low, high)


def pseudonym(patient_id):
    return 'sha256:' + hashlib.sha256(patient_id.encode()).hexdigest()[:16]


def assign_splits(patients, ratio, seed):
    """Shuffle the patients with ``seed`` and cut them ``ratio`` (e.g. 8:1:1); every split gets one when possible."""
    order = sorted(patients)
    np.random.default_rng(seed).shuffle(order)
    n = len(order)
    counts = [int(round(n * r / sum(ratio))) for r in ratio]
    for i in range(3):  # no empty split when there are enough patients and the ratio asks for one
        if counts[i] == 0 and ratio[i] > 0 and n >= 3:
            counts[int(np.argmax(counts))] -= 1
            counts[i] = 1
    counts[0] = n - counts[1] - counts[2]
    bounds = np.cumsum([0] + counts)
    return {p: SPLITS[i] for i in range(3) for p in order[bounds[i]:bounds[i + 1]]}


def read_split_file(path):
    """``patients`` of a split.json: {PatientID or pseudonym: 'train' | 'val' | 'test'}."""
    try:
        with open(path) as f:
            patients = json.load(f)['patients']
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MRSRUserError(f'{path}: not a readable split file with a "patients" mapping ({err!r})') from err
    bad = {p: s for p, s in patients.items() if s not in SPLITS}
    if bad:
        raise MRSRUserError(f'{path}: splits must be one of {SPLITS}, got {bad}')
    return patients


def discover(args, report):
    """Input tree -> list of volumes ``{'patient', 'name', 'pixels' (callable -> (S, H, W)), 'peak', 'info'}``."""
    series, skipped = scan_dicom_tree(args.input, progress=not args.quiet)
    report['skipped'] += [asdict(s) for s in skipped]
    if series:
        return select_dicom(series, args, report)
    images, skipped_images = read_image_folder(args.input)
    report['skipped'] += [asdict(s) for s in skipped_images]
    if not images:
        raise MRSRUserError(f'{args.input}: found no MR DICOM series and no PNG/TIFF slices '
                            f'({len(report["skipped"])} files skipped; see the report)')
    volumes = {}
    for name, img in images:  # the first folder level is the patient; a flat folder makes each image a patient
        patient = name.split('/')[0] if '/' in name else name
        volumes.setdefault(patient, []).append(img)
    result = []
    for patient, slices in sorted(volumes.items()):
        shapes = {s.shape for s in slices}
        if len(shapes) > 1:
            report['skipped'].append({'path': patient, 'reason': f'mixed slice sizes {sorted(shapes)}'})
            continue
        result.append({
            'patient': patient, 'name': patient, 'pixels': lambda s=slices: np.stack(s).astype(np.float32),
            'peak': float(np.iinfo(slices[0].dtype).max), 'info': {'slices': len(slices), 'source': 'images'}
        })
    return result


def select_dicom(series, args, report):
    pattern = re.compile(args.series_pattern, re.IGNORECASE)
    chosen = []
    for s in series:
        reasons = []
        if not pattern.search(s.description):
            reasons.append(f'SeriesDescription {s.description!r} does not match {args.series_pattern!r}')
        if args.plane != 'any' and s.plane != args.plane:
            reasons.append(f'{s.plane} plane, not {args.plane}')
        if reasons:
            report['skipped'].append({'path': f'series {s.uid}', 'reason': '; '.join(reasons)})
        else:
            chosen.append(s)
    if not chosen:
        raise MRSRUserError(f'{args.input}: {len(series)} MR series found, none selected by --series-pattern '
                            f'{args.series_pattern!r} and --plane {args.plane}; see {len(report["skipped"])} '
                            'reasons in the report, or widen the selection')
    by_patient = {}
    for s in chosen:
        by_patient.setdefault(s.patient_id, []).append(s)
    for patient, items in sorted(by_patient.items()):
        label = patient if args.keep_patient_ids else pseudonym(patient)
        names = ', '.join(f'{s.description!r} ({s.num_slices} slices, {s.rows}x{s.columns})' for s in items)
        if not args.quiet:
            print(f'{label}: {names}')
    return [{
        'patient': s.patient_id, 'name': s.uid, 'pixels': lambda s=s: load_series(s), 'peak': None,
        'info': {'description': s.description, 'plane': s.plane, 'slices': s.num_slices,
                 'size': [s.rows, s.columns], 'source': 'dicom'}
    } for s in chosen]


def build(args):
    out = os.path.abspath(args.output)
    if os.path.exists(out) and not args.overwrite:
        raise MRSRUserError(f'{out} exists; pass --overwrite to replace it')
    if not os.path.isdir(args.input):
        raise MRSRUserError(f'{args.input}: no such folder')
    scales = sorted(set(args.scales))
    multiple = math.lcm(*scales)
    config = DegradationConfig.from_dict(load_degradation(args))
    report = {'input': os.path.abspath(args.input), 'skipped': [], 'included': [], 'parameters': {}}
    volumes = discover(args, report)
    if args.split_file:
        fixed = read_split_file(args.split_file)
        split_of = {p: fixed[p if p in fixed else pseudonym(p)] for p in {v['patient'] for v in volumes}
                    if p in fixed or pseudonym(p) in fixed}
        report['skipped'] += [{'path': v['name'], 'reason': f'patient not in {args.split_file}'} for v in volumes
                              if v['patient'] not in split_of]
        volumes = [v for v in volumes if v['patient'] in split_of]
    else:
        split_of = assign_splits({v['patient'] for v in volumes}, args.split_ratio, args.seed)

    case_of = {p: f'case{i:04d}' for i, p in enumerate(sorted(split_of))}
    slices = {split: [] for split in SPLITS}  # (key, volume index, slice index)
    normalised = []  # per volume: quantised (S, H, W) HR, or None when skipped
    for index, volume in enumerate(progress(volumes, 'reading', args.quiet)):
        try:
            pixels, window = normalise(volume['pixels'](), args.normalize, args.percentiles, volume['peak'])
        except (MRSRUserError, ValueError) as err:
            report['skipped'].append({'path': volume['name'], 'reason': str(err)})
            normalised.append(None)
            continue
        h, w = pixels.shape[1] // multiple * multiple, pixels.shape[2] // multiple * multiple
        pixels = pixels[:, :h, :w]  # top-left crop to a multiple of every scale, as BasicSR's mod_crop
        normalised.append(quantize(pixels, args.bit_depth))  # LR is made from exactly the stored HR
        case = case_of[volume['patient']]
        series_no = sum(1 for v in volumes[:index] if v['patient'] == volume['patient'])
        kept = [i for i in range(len(pixels)) if pixels[i].mean() >= args.min_mean]
        for i in kept:
            slices[split_of[volume['patient']]].append((f'{case}_{series_no:02d}_s{i:03d}', index, i))
        report['included'].append(dict(volume['info'], case=case, split=split_of[volume['patient']],
                                       window=window, slices_kept=len(kept), cropped_to=[h, w]))
    rng = np.random.default_rng(args.seed)
    for split, cap in zip(SPLITS, args.max_slices or (0, 0, 0)):
        if cap and len(slices[split]) > cap:
            pick = sorted(rng.choice(len(slices[split]), cap, replace=False))
            slices[split] = [slices[split][i] for i in pick]

    def write_output(tmp):
        for split in SPLITS:
            write_split(os.path.join(tmp, split), slices[split], normalised, scales, config, args)
        patients = {(p if args.keep_patient_ids else pseudonym(p)): s for p, s in split_of.items()}
        with open(os.path.join(tmp, 'split.json'), 'w') as f:
            json.dump({'seed': args.seed, 'ratio': args.split_ratio, 'patients': patients,
                       'cases': {case_of[p]: split_of[p] for p in split_of}}, f, indent=1, sort_keys=True)
        report['parameters'] = dict(vars(args))
        report['parameters']['degradation'] = config.to_dict()
        report['counts'] = {split: len(slices[split]) for split in SPLITS}
        with open(os.path.join(tmp, 'report.json'), 'w') as f:
            json.dump(report, f, indent=1, default=str)

    os.makedirs(os.path.dirname(out), exist_ok=True)
    write_atomically(os.path.dirname(out), os.path.basename(out), args.overwrite, write_output)
    return report


def write_split(folder, items, volumes, scales, config, args):
    os.makedirs(folder)
    names = ['HR'] + [f'LR_x{s}' for s in scales]
    raw_bytes = sum(volumes[v][i].nbytes for _, v, i in items)
    map_size = 2 * raw_bytes + 64 * 2**20  # PNG never exceeds raw size by much; LMDB needs slack for its pages
    writers = {n: LmdbImageWriter(os.path.join(folder, f'{n}.lmdb'), map_size) for n in names}
    if args.png:
        for n in names:
            os.makedirs(os.path.join(folder, n))
    try:
        for key, v, i in progress(items, os.path.basename(folder), args.quiet):
            images = {'HR': volumes[v][i]}
            hr = images['HR'].astype(np.float32) / (2**args.bit_depth - 1)
            for s in scales:
                images[f'LR_x{s}'] = quantize(degrade(hr, s, config, rng_for(args.seed, key, s)), args.bit_depth)
            for n, img in images.items():
                writers[n].put(key, img)
                if args.png:
                    with open(os.path.join(folder, n, f'{key}.png'), 'wb') as f:
                        f.write(encode_png(img))
    finally:
        for writer in writers.values():
            writer.close()


def progress(items, desc, quiet):
    if quiet:
        return items
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit='item', file=sys.stderr)


def load_degradation(args):
    config = {}
    if args.degradation_config:
        with open(args.degradation_config) as f:
            config = yaml.safe_load(f) or {}
        config = config.get('degradation', config)
    for key in ('downsample', 'blur_sigma', 'noise_sigma', 'motion_prob', 'motion_max_shift', 'motion_fraction'):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    return config


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('input', help='TCIA download tree / any folder tree of DICOM files, or a folder of PNG/TIFF slices')
    p.add_argument('output', help='output folder (see the layout above)')
    p.add_argument('--scales', type=int, nargs='+', default=[2, 4], choices=[2, 3, 4], help='LR scales to write')
    p.add_argument('--series-pattern', default='t2', help='regex searched in SeriesDescription (case-insensitive)')
    p.add_argument('--plane', default='axial', choices=['axial', 'coronal', 'sagittal', 'any'],
                   help='slice plane, from ImageOrientationPatient')
    p.add_argument('--normalize', default='percentile', choices=['percentile', 'minmax', 'none'],
                   help='per-volume intensity window; none divides by the bit depth (PNG/TIFF input only)')
    p.add_argument('--percentiles', type=float, nargs=2, default=[0.5, 99.5], help='window of --normalize percentile')
    p.add_argument('--bit-depth', type=int, default=16, choices=[8, 16],
                   help='stored precision; 8 for runs comparable with the paper')
    p.add_argument('--min-mean', type=float, default=0.0, help='drop slices whose normalised mean is below this')
    p.add_argument('--split-ratio', type=float, nargs=3, default=[8, 1, 1], help='train val test, by patient')
    p.add_argument('--split-file', help='reuse the patient split of an earlier split.json')
    p.add_argument('--max-slices', type=int, nargs=3, help='cap per split, e.g. 2000 250 250 as in the paper')
    p.add_argument('--seed', type=int, default=0, help='seed of the split, the caps and the degradations')
    p.add_argument('--keep-patient-ids', action='store_true', help='write real PatientIDs into split.json/report')
    p.add_argument('--png', action='store_true', help='also write PNG folders next to the LMDBs')
    p.add_argument('--overwrite', action='store_true', help='replace an existing output folder')
    p.add_argument('--quiet', action='store_true', help='no progress bars or per-patient lines')
    g = p.add_argument_group('degradation (also from --degradation-config YAML; flags win)')
    g.add_argument('--degradation-config', help='YAML with DegradationConfig keys, top level or under degradation:')
    g.add_argument('--downsample', choices=['bicubic', 'kspace'], help='MATLAB bicubic or k-space truncation')
    g.add_argument('--blur-sigma', type=float, nargs='+', help='Gaussian blur sigma of HR before down-sampling')
    g.add_argument('--noise-sigma', type=float, nargs='+', help='Rician noise sigma on LR, in [0, 1] units')
    g.add_argument('--motion-prob', type=float, help='probability of the k-space motion model per slice')
    g.add_argument('--motion-max-shift', type=float, help='largest motion shift in pixels')
    g.add_argument('--motion-fraction', type=float, help='fraction of k-space lines a motion event corrupts')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        report = build(args)
    except (MRSRUserError, ValueError, OSError) as err:
        print(f'lmdb_prepare: error: {err}', file=sys.stderr)
        sys.exit(2)
    counts = ', '.join(f'{k} {v}' for k, v in report['counts'].items())
    print(f'wrote {args.output}: {counts} slices; {len(report["skipped"])} inputs skipped (see report.json)')


if __name__ == '__main__':
    main()
