"""scripts/reproduce_paper.py: the command line of :mod:`mrsr_plugin.apps.reproduce`."""
import argparse
import os

from mrsr_plugin.apps import reproduce
from mrsr_plugin.apps.reproduce import PRESETS, REPO, run
from mrsr_plugin.cli.common import guarded


def main(argv=None):
    p = argparse.ArgumentParser(description=reproduce.__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--preset', choices=sorted(PRESETS), default='cpu')
    p.add_argument('--tables', nargs='+', choices=['3', '12'], default=['3', '12'],
                   help='3: Tables 3-4 and Fig. 7; 12: the Table 1-2 ablations at x4')
    budget = p.add_mutually_exclusive_group()
    budget.add_argument('--iters', type=int, help="override the preset's iterations (e.g. 2 for a smoke test)")
    budget.add_argument('--budgets', nargs='+', type=int, metavar='ITERS',
                        help='a learning curve: one run per budget (lr halved at 70%% of each) in OUTPUT/iters-N, '
                             'then curve.csv, curve_patients.csv and curve.png; complete budgets are kept')
    p.add_argument('--only', nargs='+', metavar='TEXT',
                   help='only the option files whose name contains one of these (any case)')
    p.add_argument('--data', default=os.path.join(REPO, 'datasets', 'prostate3t_prepared'),
                   help='output of scripts/lmdb_prepare.py with --scales 2 4')
    p.add_argument('--output', help='results folder (default benchmarks/paper/<preset>-<time>); never overwritten')
    p.add_argument('--perceptual', action='store_true',
                   help="keep the option files' perceptual loss (SRGAN, MRDAB-GAN; needs make vgg16) instead of the "
                        "preset's L1 + GAN")
    p.add_argument('--retest', metavar='OUTPUT', help='test the models an earlier run trained, without training')
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    p.add_argument('--metrics', nargs='+', help="benchmark_zoo.py's --metrics (default: all it has)")
    guarded('reproduce_paper', run, p.parse_args(argv))


if __name__ == '__main__':
    main()
