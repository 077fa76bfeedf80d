"""Networks of the plugin; importing this package registers every ``*_arch.py`` module in ARCH_REGISTRY."""
import importlib
from os import path as osp

from basicsr.utils import scandir

_arch_folder = osp.dirname(osp.abspath(__file__))
_arch_modules = [
    importlib.import_module(f'{__name__}.{osp.splitext(name)[0]}')
    for name in sorted(scandir(_arch_folder)) if name.endswith('_arch.py')
]
