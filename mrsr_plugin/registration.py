"""Registers the plugin into BasicSR's registries."""
import importlib
import os

from mrsr_plugin import compat

# package -> the file suffix of its registering modules; archs, models and metrics also import theirs when imported
# (as BasicSR's packages do), data does not (lmdb_prepare imports its degradations without torch or BasicSR)
PLUGIN_PACKAGES = {'mrsr_plugin.archs': '_arch.py', 'mrsr_plugin.data': '_dataset.py',
                   'mrsr_plugin.models': '_model.py', 'mrsr_plugin.metrics': '_metric.py'}


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
    for name, suffix in PLUGIN_PACKAGES.items():
        import_modules(name, importlib.import_module(name).__file__, suffix)
