"""Shared start-up of the plugin's train and test entry points (Real-ESRGAN style, over BasicSR's pipelines)."""
import os
import sys
from os import path as osp

from mrsr_plugin.compat import MRSRUserError, OptionValueError


def experiments_root():
    """Folder that receives ``experiments/``, ``results/`` and ``tb_logger/``.

    The source checkout when the package runs from one (it has a setup.py beside the package), else the current
    folder: never site-packages. ``MRSR_ROOT`` overrides both.
    """
    if os.environ.get('MRSR_ROOT'):
        return osp.abspath(os.environ['MRSR_ROOT'])
    checkout = osp.dirname(osp.dirname(osp.abspath(__file__)))
    return checkout if osp.isfile(osp.join(checkout, 'setup.py')) else os.getcwd()


def run(pipeline):
    """Run ``pipeline(root_path)``; expected user errors end in one line on stderr and exit status 2."""
    import mrsr_plugin  # noqa: F401  registers the plugin when basicsr is imported
    try:
        pipeline(experiments_root())
    except (MRSRUserError, FileNotFoundError) as err:
        where = f'{_option_file(sys.argv)}: ' if isinstance(err, OptionValueError) else ''
        print(f'mrsr_plugin: error: {where}{err}', file=sys.stderr)
        sys.exit(2)


def _option_file(argv):
    """The path after ``-opt`` in BasicSR's command line."""
    return argv[argv.index('-opt') + 1] if '-opt' in argv[:-1] else "the option file"
