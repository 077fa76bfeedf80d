"""scripts/benchmark_zoo.py: the command line of :mod:`mrsr_plugin.apps.benchmark`."""
import argparse

from mrsr_plugin.apps.benchmark import DEFAULTS, run
from mrsr_plugin.apps.evaluation import METRICS
from mrsr_plugin.cli.common import guarded


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='benchmark_zoo.py', description='Train (or find), test and tabulate the model zoo '
                                "on one prepared dataset: the paper's Tables 3-4 and Fig. 7.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.set_defaults(**DEFAULTS)
    p.add_argument('--data',
                   help='output of scripts/lmdb_prepare.py')
    p.add_argument('--split', nargs='+', choices=['train', 'val', 'test'],
                   help='split(s) to test on; several are pooled (their patients together)')
    p.add_argument('--options', nargs='+', help='option files of the models')
    p.add_argument('--iters', type=int, help='train each model this long; 0 = use --checkpoints')
    p.add_argument('--checkpoints',
                   help='folder holding <name>/models/net_g_latest.pth when --iters 0')
    p.add_argument('--force_yml', nargs='+', metavar='KEY:SUBKEY=VALUE',
                   help="override option keys in every file that has their block, as BasicSR's --force_yml, e.g. "
                   'datasets:train:batch_size_per_gpu=4')
    p.add_argument('--set', nargs='+', help=argparse.SUPPRESS)  # the old name: a one-line pointer to the new one
    p.add_argument('--device', choices=['auto', 'cpu', 'cuda'])
    p.add_argument('--metrics', nargs='+', choices=list(METRICS), metavar='METRIC',
                   help=f'Table 3 columns, of: {" ".join(METRICS)} (LPIPS and DISTS once mrsr-fetch-vgg has made their '
                   'weights)')
    p.add_argument('--resamples', type=int, help='bootstrap resamples of the intervals')
    p.add_argument('--seed', type=int, help='seed of the bootstrap')
    p.add_argument('--region', type=int, nargs=3, metavar=('Y', 'X', 'SIZE'), help='Fig. 7 region in HR pixels')
    p.add_argument('--output', help='results folder (default benchmarks/zoo/<time>); never overwritten')
    p.add_argument('--resume', action='store_true', help='complete an interrupted run in --output: models whose '
                   'training there reached its last iteration are tested, not trained again')
    args = p.parse_args(argv)
    if args.set:
        p.error('--set is now --force_yml, with colons: --force_yml datasets:train:gt_size=64 (BasicSR\'s syntax)')
    return args


def main(argv=None):
    return guarded('benchmark_zoo', run, parse_args(argv))


if __name__ == '__main__':
    main()
