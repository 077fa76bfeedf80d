"""Registers the plugin into BasicSR's registries."""
import importlib
import os

from mrsr_plugin import compat

PLUGIN_PACKAGES = ('mrsr_plugin.archs', 'mrsr_plugin.data', 'mrsr_plugin.models', 'mrsr_plugin.metrics')


def import_modules(package_name, package_file, suffix):
    """Import every module of a package whose file name ends in ``suffix`` (BasicSR's ``*_arch.py`` scheme)."""
    folder = os.path.dirname(os.path.abspath(package_file))
    return [
        importlib.import_module(f'{package_name}.{name[:-3]}') for name in sorted(os.listdir(folder))
        if name.endswith(suffix)
    ]


def register():
    """Apply the runtime fixes of :mod:`mrsr_plugin.compat` and import every plugin module, whose decorators
    register its classes in BasicSR's registries. Idempotent: Python imports each module once."""
    compat.apply_runtime_fixes()
    for name in PLUGIN_PACKAGES:  # archs, models and metrics import their modules (as BasicSR's packages do)
        importlib.import_module(name)
    # data does not (lmdb_prepare uses its degradations without torch or BasicSR): its datasets are imported here.
    # A dataset module may be the one whose import of basicsr runs this; it is left to finish, and the others
    # import only what is complete (their shared base, mrsr_plugin.data.slice_base, imports no basicsr on load)
    import_modules('mrsr_plugin.data', importlib.import_module('mrsr_plugin.data').__file__, '_dataset.py')
