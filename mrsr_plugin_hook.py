"""Startup hook of mrsr_plugin, run by ``mrsr_plugin_hook.pth`` at interpreter start.

It puts one finder on ``sys.meta_path`` and imports nothing else: programs that never import ``basicsr`` pay for
this module only. When ``basicsr`` is imported, the finder applies the plugin's compatibility fixes
(:mod:`mrsr_plugin.compat`) before ``basicsr`` runs and registers the plugin's archs, datasets, models, losses and
metrics right after (:func:`mrsr_plugin.registration.register`), so ``python basicsr/train.py -opt ...`` finds
``MRDABNet`` without importing the plugin. Set ``MRSR_PLUGIN_DISABLE=1`` to switch the hook off.
"""
import os
import sys


class BasicsrImportHook:
    """Meta-path finder that wraps the loader of ``basicsr``; fires once per process."""

    def __init__(self):
        self.fired = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != 'basicsr' or self.fired:
            return None
        self.fired = True
        from mrsr_plugin import compat
        compat.install_import_fixes()
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, 'find_spec'):
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, 'exec_module'):
            spec.loader = _RegisterAfterExec(spec.loader)
        return spec


class _RegisterAfterExec:
    """Delegates to basicsr's own loader, then registers the plugin and puts the original loader back."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        from mrsr_plugin.registration import register
        register()


def install():
    """Put the hook on ``sys.meta_path`` (idempotent); register at once if ``basicsr`` is already imported."""
    if os.environ.get('MRSR_PLUGIN_DISABLE', '') not in ('', '0'):
        return
    if not any(type(f).__name__ == 'BasicsrImportHook' for f in sys.meta_path):
        sys.meta_path.insert(0, BasicsrImportHook())
    basicsr = sys.modules.get('basicsr')
    if basicsr is not None and not getattr(getattr(basicsr, '__spec__', None), '_initializing', False):
        from mrsr_plugin.registration import register
        register()
