"""mrsr-selfcheck: the command line of :mod:`mrsr_plugin.apps.selfcheck`."""
import argparse
import shutil
import sys
import tempfile
import time

import torch

from mrsr_plugin.apps import selfcheck
from mrsr_plugin.apps.selfcheck import SIZES, SelfCheck, format_table
from mrsr_plugin.cli.common import guarded


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='mrsr-selfcheck', description=selfcheck.__doc__.splitlines()[0])
    p.add_argument('--device', default='auto', choices=['auto', 'cuda', 'cpu'], help='auto: CUDA when available')
    p.add_argument('--size', choices=list(SIZES),
                   help='network and data sizes: paper (the default on CUDA) or tiny (the default on a CPU)')
    p.add_argument('--compile', action='store_true',
                   help='run the compile check on a CPU too (about a minute on 2 cores)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mrsr_plugin.apps.infer.core import choose_device
    device = guarded('mrsr-selfcheck', choose_device, args.device)
    size = args.size or ('paper' if device.type == 'cuda' else 'tiny')
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
    print(f'mrsr-selfcheck: torch {torch.__version__} on {device.type} ({name}), {size} sizes', flush=True)
    start, work = time.perf_counter(), tempfile.mkdtemp(prefix='mrsr-selfcheck-')
    rows = SelfCheck(device, size, work, args.compile).all()
    failed = [r.check for r in rows if r.status == 'FAILED']
    print(format_table(rows))
    print(f'{len(rows) - len(failed)} of {len(rows)} checks passed or skipped, {len(failed)} failed, in '
          f'{time.perf_counter() - start:.0f} s')
    if failed:
        print(f'work folder kept for its logs: {work}')
        sys.exit(1)
    shutil.rmtree(work)

if __name__ == '__main__':
    main()
