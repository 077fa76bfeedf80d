"""mrsr-prepare (scripts/lmdb_prepare.py): the command line of :mod:`mrsr_plugin.apps.prepare`.

Exit status: 0 every input used; 1 the output is written, but some inputs were skipped for a fault of theirs (their
reasons above and in report.json); 2 the run stopped and wrote nothing (one line says why); 130 interrupted.
"""
import argparse
import sys

from mrsr_plugin.apps import prepare
from mrsr_plugin.apps.prepare import build
from mrsr_plugin.cli.common import exit_status, guarded
from mrsr_plugin.mrio.intensity import DEFAULT_NORMALIZE, DEFAULT_PERCENTILES


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=prepare.__doc__.splitlines()[0], epilog=__doc__.split('\n\n', 1)[1].strip(),
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('input', help='TCIA download tree / any folder tree of DICOM files and/or volume files (.nii, '
                   '.nii.gz, .mha, .mhd, .nrrd, .nhdr), or a folder of PNG/TIFF slices')
    p.add_argument('output', help='output folder (see the layout above)')
    p.add_argument('--scales', type=int, nargs='+', default=[2, 4], choices=[2, 3, 4], help='LR scales to write')
    p.add_argument('--series-pattern', default='t2',
                   help='regex searched in SeriesDescription (case-insensitive; DICOM only)')
    p.add_argument('--plane', default='axial', choices=['axial', 'coronal', 'sagittal', 'any'],
                   help='slice plane, from ImageOrientationPatient (DICOM) or the direction of the first two image '
                   'axes (volume files, sliced along their third axis)')
    p.add_argument('--volume-channel', type=int,
                   help='volume files with several channels (4-D, e.g. the Decathlon\'s T2 and ADC): the channel to '
                   'use, from 0; such files are skipped without it')
    p.add_argument('--patients-csv',
                   help='CSV with the columns file (path relative to INPUT, or file name) and patient: the patient of '
                   'each volume file (default: its name without extension); files not in it are skipped')
    p.add_argument('--normalize', default=DEFAULT_NORMALIZE, choices=['percentile', 'minmax', 'none'],
                   help='per-volume intensity window; none divides by the bit depth (PNG/TIFF input only)')
    p.add_argument('--percentiles', type=float, nargs=2, default=list(DEFAULT_PERCENTILES),
                   help='window of --normalize percentile')
    p.add_argument('--bit-depth', type=int, default=16, choices=[8, 16],
                   help='stored precision; 8 for runs comparable with the paper')
    p.add_argument('--min-mean', type=float, default=0.0, help='drop slices whose normalised mean is below this')
    p.add_argument('--split-ratio', type=float, nargs=3, default=[8, 1, 1], help='train val test, by patient')
    p.add_argument('--split-file', help='reuse the patient split of an earlier split.json')
    p.add_argument('--max-slices', type=int, nargs=3, help='cap per split, e.g. 2000 250 250 as in the paper')
    p.add_argument('--seed', type=int, default=0, help='seed of the split, the caps and the degradations')
    p.add_argument('--keep-patient-ids', action='store_true',
                   help='write real PatientIDs and paths into split.json and report.json (no pseudonyms)')
    p.add_argument('--secret-file',
                   help='key of the pseudonyms (created 0600 if absent); default: .mrsr_secret beside OUTPUT, outside '
                   'what is shared')
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
    report = guarded('lmdb_prepare', build, args)
    counts = ', '.join(f'{k} {v}' for k, v in report['counts'].items())
    print(f'wrote {args.output}: {counts} slices from {len(report["included"])} inputs; '
          f'{len(report["skipped"])} inputs skipped, {len(report["warnings"])} warnings (see report.json)')
    status = exit_status('lmdb_prepare', report, 'report.json')
    if status:
        sys.exit(status)

if __name__ == '__main__':
    main()
