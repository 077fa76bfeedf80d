"""Registers the plugin into BasicSR's registries."""
import importlib

from mrsr_plugin import compat

PLUGIN_PACKAGES = ('mrsr_plugin.archs', )


def register():
    """Apply the runtime fixes of :mod:`mrsr_plugin.compat` and import every plugin module, whose decorators
    register its classes in BasicSR's registries. Idempotent: Python imports each module once."""
    compat.apply_runtime_fixes()
    for name in PLUGIN_PACKAGES:
        importlib.import_module(name)
