"""mrsr-infer (scripts/inference.py): the command line of :mod:`mrsr_plugin.apps.infer.run`."""
import argparse
import sys

from mrsr_plugin.apps.infer.run import DEFAULTS, REPORT_NAME, infer
from mrsr_plugin.cli.common import exit_status, guarded


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the None and False of options that have none."""

    def _get_help_string(self, action):
        return action.help if action.default is None or action.default is False else super()._get_help_string(action)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog='mrsr-infer', formatter_class=_HelpFormatter,
        description='Super-resolve real MR scans with a trained BasicSR generator: DICOM files, series or TCIA trees '
        '-> one new DICOM series each (same physical extent, DERIVED, new UIDs); NIfTI, MetaImage and NRRD volumes -> '
        'the same format (every slice along the third image axis, same physical extent); PNG/TIFF slices -> PNG.')
    p.add_argument('-i', '--input', required=True,
                   help='DICOM file, series folder or TCIA-style tree (one output series per MR series); a volume file '
                   '(.nii, .nii.gz, .mha, .mhd, .nrrd, .nhdr) or a folder of them (may be mixed with DICOM); or a '
                   'PNG/TIFF file or folder')
    p.add_argument('-o', '--output', required=True,
                   help='folder that receives one sub-folder per series, and <stem>_SRx<s>.<extension> per volume file '
                   '(in the sub-folder it has in the input)')
    p.add_argument('-w', '--weights', required=True,
                   help='BasicSR checkpoint (.pth with params and/or params_ema), or a name of the weights manifest '
                   '(mrsr-weights lists them; downloaded once and checked by sha256); checkpoints the plugin wrote '
                   'say their network, scale, intensity window and slice profile themselves')
    net = p.add_mutually_exclusive_group()
    net.add_argument('-opt', help='BasicSR option file whose network_g builds the network, for checkpoints that do not '
                     'describe themselves (older ones, BasicSR\'s own); wins over the checkpoint\'s, with a warning '
                     'where they differ')
    net.add_argument('--arch-args', help='network_g as JSON instead, e.g. \'{"type": "MRDABNet", "num_in_ch": 1, '
                     '"num_out_ch": 1, "upscale": 2}\'')
    p.add_argument('--param-key', help='checkpoint key of the weights (default: params_ema if present, else params)')
    p.add_argument('--through-plane', action='store_true',
                   help='super-resolve along the slice axis instead of in-plane, with an upscale-1 model trained by '
                   'options/through_plane, whose slice profile gives the scale (from the checkpoint, or from -opt\'s '
                   'datasets.train.degradation); DICOM series and volume files only')
    p.add_argument('--slice-thickness', type=float, metavar='MM',
                   help='--through-plane: the slice thickness of volume files (which have none; without it the slice '
                   'spacing is assumed) and of DICOM series without SliceThickness')
    p.add_argument('--force', action='store_true',
                   help='--through-plane: run on inputs whose slice geometry differs from the one the model was '
                   'trained for (by more than 15%%), with a warning in the output\'s description and the report')
    p.add_argument('--data-consistency', action=argparse.BooleanOptionalAction,
                   help='--through-plane: correct the output so that the model\'s slice profile reproduces the '
                   'acquired slices exactly (the smallest change that does; NRMSE before and after in the report)')
    p.add_argument('--scale', type=int,
                   help='the upscale of a network whose checkpoint, network_g and option file give none (an error '
                   'where they give another)')
    p.add_argument('--normalize', choices=['percentile', 'minmax', 'none'],
                   help='per-series intensity window (default: the training data\'s, from the checkpoint, else '
                   'percentile); none: divide by the bit depth (PNG/TIFF input only)')
    p.add_argument('--percentiles', type=float, nargs=2,
                   help='window of --normalize percentile (default: the training data\'s, from the checkpoint, else '
                   '0.5 99.5)')
    p.add_argument('--volume-channel', type=int,
                   help='volume files with several channels (4-D, e.g. T2 and ADC, or several components per voxel): '
                   'the channel to super-resolve, from 0; such files are skipped without it')
    p.add_argument('--png', action='store_true',
                   help='DICOM input: also write the normalised output slices as PNG (png/ in each series folder; the '
                   'window fills the PNG range, intensities outside it are clipped there, not in the DICOM)')
    p.add_argument('--png-bit-depth', type=int, choices=[8, 16],
                   help='PNG output bit depth (default: the input image\'s; 16 for DICOM input)')
    p.add_argument('--tile', type=int, help='tile size in input pixels for large slices; 0: whole slices')
    p.add_argument('--tile-overlap', type=int,
                   help='context pixels around each tile; tiled equals untiled when the receptive-field radius of a '
                   'fully convolutional network is at most this')
    p.add_argument('--batch', type=int, help='slices per forward pass (default: 1 on the CPU, where batching is no '
                   'faster and each slice adds its activations to the peak memory; 4 on CUDA)')
    p.add_argument('--device', choices=['auto', 'cpu', 'cuda'], help='auto: CUDA when available')
    p.add_argument('--precision', choices=['fp32', 'fp16', 'bf16'],
                   help='fp32, or autocast in bf16 or fp16 (changes the arithmetic; see README, Speed)')
    p.add_argument('--channels-last', action=argparse.BooleanOptionalAction,
                   help='run the network in torch.channels_last memory format')
    p.add_argument('--compile', action='store_true', help='torch.compile the network (pays off on long runs)')
    p.add_argument('--reparameterize', choices=['none', 'fold', 'merge'],
                   help='MRDABNet: fold SAM\'s convolutions and the local residuals; merge also each multi-scale '
                   'group into one convolution (exact; slower on a CPU)')
    p.add_argument('--keep-freed-memory', action=argparse.BooleanOptionalAction,
                   help='CPU with glibc: keep freed memory for reuse instead of page-faulting fresh memory for every '
                   'large tensor (faster; the process keeps its peak memory)')
    p.add_argument('--overwrite', action='store_true', help='replace existing output series folders')
    p.add_argument('-q', '--quiet', action='store_true', help='no progress bars or skipped-file notes')
    p.set_defaults(**DEFAULTS)
    return p.parse_args(argv)


def main(argv=None):
    """Exit status: 0 every input used; 1 outputs written, some inputs skipped for a fault of theirs (reasons above
    and in the report); 2 the run stopped (one line says why); 130 interrupted."""
    args = parse_args(argv)
    summary, report = guarded('mrsr-infer', infer, args)
    print('\n'.join(summary))
    status = exit_status('mrsr-infer', report, REPORT_NAME)
    if status:
        sys.exit(status)

if __name__ == '__main__':
    main()
