"""Peak memory and throughput of scripts/lmdb_prepare.py on a generated tree of many small patients; measures only.

Generates a TCIA-like tree (``patient/study/t2_tse_tra/*.dcm``) of ``--patients`` synthetic patients, one axial T2
series of ``--slices`` slices of ``--size`` x ``--size`` 12-bit pixels each (smooth 'anatomy' plus noise, written
from pydicom's MR_small.dcm header), then runs ``scripts/lmdb_prepare.py TREE OUT --scales 2 4 --quiet`` in a
fresh interpreter of each ``--repo`` (a checkout; default this one) and reports, per run, the wall time, the
throughput (slices written per second, input MB per second) and the peak resident set of the prepare process
(``ru_maxrss`` of that child alone, from ``os.wait4``) and, sampled every 20 ms from ``/proc/PID/status``, its
peak anonymous resident memory (``RssAnon``: the heap, arrays and tensors, without the file-backed pages of the
shared libraries that ``ru_maxrss`` also counts).

What an interpreter that only imports lmdb_prepare's module costs before any data is read is measured too
(``import`` row): about 0.22 GB RSS since it imports neither torch nor BasicSR (1.3 GB before, with torch's CUDA
build). A streaming preparation stays near that floor plus one volume, whatever the number of patients.

    python scripts/benchmark_prepare.py                                # 300 patients x 16 slices of 192x192
    python scripts/benchmark_prepare.py --patients 600 --repo /tmp/old-checkout --repo .   # before / after

Measured on a shared 2-core CPU (load about 2), 300 patients, one run each (``--repo OLD --repo .``): with torch
and BasicSR imported (before) and without (after), peak RSS 1362 -> 287 MB (import floor 1286 -> 216 MB), peak
anonymous memory 528 -> 129 MB, 82.7 -> 175.2 slices/s. Earlier, streaming the volumes took the 300-patient peak RSS
from 1.64 to 1.30 GB.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from mrsr_plugin.apps.measure import run_measured

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))


def make_tree(root, patients, slices, size, seed=0):
    """``patients`` folders of one axial T2 series each; returns the total input bytes."""
    import cv2
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    template = pydicom.dcmread(get_testdata_file('MR_small.dcm'))
    rng = np.random.default_rng(seed)
    total = 0
    for p in range(patients):
        folder = os.path.join(root, f'BENCH-{p:04d}', 'study', 't2_tse_tra')
        os.makedirs(folder)
        anatomy = np.zeros((size, size), np.float32)
        for _ in range(5):
            centre = tuple(int(v) for v in rng.integers(size // 8, size - size // 8, 2))
            axes = tuple(int(v) for v in rng.integers(size // 16, size // 3, 2))
            cv2.ellipse(anatomy, centre, axes, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(0.2, 1)), -1)
        anatomy = cv2.GaussianBlur(anatomy, (0, 0), 2.0)
        series_uid, study_uid = generate_uid(), generate_uid()
        for i in range(slices):
            img = anatomy * (0.8 + 0.4 * i / max(slices - 1, 1)) + rng.normal(0, 0.02, anatomy.shape)
            ds = template.copy()
            ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = f'BENCH-{p:04d}', study_uid, series_uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.SeriesDescription = 't2_tse_tra'
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.ImagePositionPatient = [0.0, 0.0, 3.0 * i]
            ds.InstanceNumber = i + 1
            ds.Rows = ds.Columns = size
            ds.PixelData = np.round(np.clip(img, 0, 1) * 4095).astype(np.int16).tobytes()
            path = os.path.join(folder, f'{i:03d}.dcm')
            ds.save_as(path, enforce_file_format=True)
            total += os.path.getsize(path)
    return total


def run_prepare(repo, tree, out):
    """``repo``'s lmdb_prepare.py in a fresh interpreter; returns (wall s, peak RSS, peak RssAnon, report dict)."""
    env = dict(os.environ, PYTHONPATH=repo)
    command = [sys.executable, os.path.join(repo, 'scripts', 'lmdb_prepare.py'), tree, out, '--scales', '2', '4',
               '--quiet']
    wall, peak, anon, _ = run_measured(command, repo, env)
    with open(os.path.join(out, 'report.json')) as f:
        report = json.load(f)
    return wall, peak, anon, report


def import_floor(repo):
    """Peak RSS and RssAnon of an interpreter that only imports lmdb_prepare's module (OpenCV, pydicom, SimpleITK)."""
    env = dict(os.environ, PYTHONPATH=repo)
    command = [sys.executable, '-c', 'import time; import mrsr_plugin.apps.prepare; time.sleep(0.1)']
    return run_measured(command, repo, env)[:3]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--patients', type=int, default=300)
    parser.add_argument('--slices', type=int, default=16, help='slices per patient')
    parser.add_argument('--size', type=int, default=192, help='rows and columns of each slice')
    parser.add_argument('--repo', action='append', help='checkout whose scripts/lmdb_prepare.py runs (repeatable; '
                        'default: this one)')
    parser.add_argument('--repeats', type=int, default=1, help='runs per checkout; the fastest is reported')
    parser.add_argument('--tree', help='reuse (or create) the generated tree here instead of a temporary folder')
    parser.add_argument('--json', help='also write the results here')
    args = parser.parse_args()
    repos = [os.path.abspath(r) for r in args.repo or [REPO]]

    with tempfile.TemporaryDirectory() as tmp:
        tree = args.tree or os.path.join(tmp, 'tree')
        if os.path.isdir(tree):
            input_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tree) for f in fs)
        else:
            start = time.perf_counter()
            input_bytes = make_tree(tree, args.patients, args.slices, args.size)
            print(f'generated {args.patients} patients x {args.slices} slices of {args.size}x{args.size} '
                  f'({input_bytes / 2**20:.0f} MB) in {time.perf_counter() - start:.0f} s')
        results = {'patients': args.patients, 'slices_per_patient': args.slices, 'size': args.size,
                   'input_mb': round(input_bytes / 2**20, 1), 'cpus': os.cpu_count(), 'runs': []}
        header = f'{"checkout":<36} {"run":<7} {"wall s":>7} {"slices/s":>9} {"MB/s in":>8} {"peak RSS MB":>12} ' \
            f'{"peak anon MB":>13}'
        print(header)
        for repo in repos:
            wall, peak, anon = import_floor(repo)
            results['runs'].append({'repo': repo, 'run': 'import', 'wall_s': round(wall, 2),
                                    'peak_rss_mb': round(peak / 2**20, 1), 'peak_anon_mb': round(anon / 2**20, 1)})
            print(f'{repo[-36:]:<36} {"import":<7} {wall:>7.1f} {"":>9} {"":>8} {peak / 2**20:>12.1f} '
                  f'{anon / 2**20:>13.1f}')
            best = None
            for _ in range(args.repeats):
                out = os.path.join(tmp, 'out')
                measured = run_prepare(repo, tree, out)
                shutil.rmtree(out)
                if best is None or measured[0] < best[0]:
                    best = measured
            wall, peak, anon, report = best
            slices = sum(report['counts'].values())
            run = {'repo': repo, 'run': 'prepare', 'wall_s': round(wall, 2), 'slices': slices,
                   'slices_per_s': round(slices / wall, 1), 'input_mb_per_s': round(input_bytes / 2**20 / wall, 2),
                   'peak_rss_mb': round(peak / 2**20, 1), 'peak_anon_mb': round(anon / 2**20, 1)}
            results['runs'].append(run)
            print(f'{repo[-36:]:<36} {"prepare":<7} {wall:>7.1f} {run["slices_per_s"]:>9.1f} '
                  f'{run["input_mb_per_s"]:>8.2f} {run["peak_rss_mb"]:>12.1f} {run["peak_anon_mb"]:>13.1f}')
            sys.stdout.flush()
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
