"""Peak memory of mrsr-infer on one 384x384 DICOM series at x2 and x4, with the defaults; measures only.

The series: ``--slices`` consecutive slices of the embedded test patient's axial T2 (datasets/prostate3t,
Prostate3T-03-0005, 384x384), copied to a temporary folder. x2 runs the shipped demo generator by name
(``-w mrdab_x2_prostate3t_demo``); x4 the same network_g at upscale 4 with random weights (a checkpoint written
here, passed with ``--arch-args``; memory does not depend on the weights). Each run is
``python scripts/inference.py -i SERIES -o OUT -w WEIGHTS -q [VARIANT]`` in a fresh interpreter of each ``--repo``
(a checkout; default this one), measured by :func:`mrsr_plugin.apps.measure.run_measured`: the peak RSS of that
process alone (``ru_maxrss`` from ``os.wait4``, what ``/usr/bin/time -v`` reports) and its peak anonymous memory
(``RssAnon``, without the shared libraries' file-backed pages). The ``import`` row is an interpreter that only
imports the command (torch, BasicSR, pydicom, SimpleITK): the floor under every run.

    python scripts/benchmark_infer_memory.py                       # x2 and x4, the defaults
    python scripts/benchmark_infer_memory.py --variant="--batch 4" --variant=--no-keep-freed-memory \\
        --repo /tmp/old-checkout --repo .                          # what sets the peak, before / after

Measured (``--slices 4``, shared 2-core CPU, torch 2.15 CUDA build), peak RSS with the defaults: x2 3259 -> 1771 MB,
x4 5673 -> 1862 MB; the imports alone 1.29 GB. The table and what sets the peak: docs/speed.md, section Memory.
"""
import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
PATIENT = os.path.join(REPO, 'datasets', 'prostate3t', 'Prostate3T-03-0005')
DEMO = 'mrdab_x2_prostate3t_demo'


def make_series(folder, slices):
    """The first ``slices`` files of the embedded test patient's T2 series (in file name order) into ``folder``."""
    files = sorted(os.path.join(d, f) for d, _, names in os.walk(PATIENT) for f in names if f.endswith('.dcm'))
    os.makedirs(folder)
    for path in files[:slices]:
        shutil.copy(path, folder)


def weights_for(scale, folder):
    """(-w value, extra arguments) of the x``scale`` network: the demo generator by name at its own scale, else its
    network_g (from its checkpoint's mrsr block) at ``scale`` with random weights, saved in ``folder`` and passed
    with --arch-args (which older checkouts read too)."""
    import torch
    from basicsr.archs import build_network

    import mrsr_plugin  # noqa: F401  registers the archs
    from mrsr_plugin import checkpoint
    from mrsr_plugin.weights import resolve
    _, info = checkpoint.read(resolve(DEMO)[0])
    if scale == info['scale']:
        return DEMO, []
    network_g = dict(info['network_g'], upscale=scale)
    torch.manual_seed(0)
    path = os.path.join(folder, f'random_x{scale}.pth')
    torch.save({'params': build_network(dict(network_g)).state_dict()}, path)
    return path, ['--arch-args', json.dumps(network_g)]


def main():
    from mrsr_plugin.apps.measure import run_measured
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scales', type=int, nargs='+', default=[2, 4], choices=[2, 3, 4])
    parser.add_argument('--slices', type=int, default=6, help='slices of the series (19 at most)')
    parser.add_argument('--variant', action='append', default=[],
                        help='extra mrsr-infer arguments of one more run per scale, e.g. --variant="--batch 4" '
                        '(repeatable); the defaults always run')
    parser.add_argument('--repo', action='append', help='checkout whose scripts/inference.py runs (repeatable; '
                        'default: this one)')
    parser.add_argument('--json', help='also write the results here')
    args = parser.parse_args()
    repos = [os.path.abspath(r) for r in args.repo or [REPO]]
    rows = []
    print(f'{"checkout":<32} {"scale":>5} {"arguments":<26} {"wall s":>7} {"peak RSS MB":>12} {"peak anon MB":>13}')
    with tempfile.TemporaryDirectory() as tmp:
        series = os.path.join(tmp, 'series')
        make_series(series, args.slices)
        weights = {scale: weights_for(scale, tmp) for scale in args.scales}
        for repo in repos:
            env = dict(os.environ, PYTHONPATH=repo)
            runs = [('import', None, [sys.executable, '-c', 'import mrsr_plugin.cli.infer'])]
            for scale in args.scales:
                for variant in [''] + args.variant:
                    out = os.path.join(tmp, f'out{len(runs)}')
                    command = [sys.executable, os.path.join(repo, 'scripts', 'inference.py'), '-i', series, '-o',
                               out, '-w', weights[scale][0], *weights[scale][1], '-q', *shlex.split(variant)]
                    runs.append((variant or 'defaults', scale, command))
            for name, scale, command in runs:
                wall, peak, anon, _ = run_measured(command, repo, env)
                rows.append({'repo': repo, 'scale': scale, 'arguments': name, 'slices': args.slices,
                             'wall_s': round(wall, 1), 'peak_rss_mb': round(peak / 2**20), 'peak_anon_mb':
                             round(anon / 2**20)})
                print(f'{repo[-32:]:<32} {scale or "":>5} {name:<26} {wall:>7.1f} {peak / 2**20:>12.0f} '
                      f'{anon / 2**20:>13.0f}', flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'series': f'{args.slices} slices of 384x384, {os.path.basename(PATIENT)}', 'cpus':
                       os.cpu_count(), 'rows': rows}, f, indent=1)


if __name__ == '__main__':
    main()
