"""Networks of the plugin; importing this package registers every ``*_arch.py`` module in ARCH_REGISTRY."""
from mrsr_plugin.registration import import_modules

_arch_modules = import_modules(__name__, __file__, '_arch.py')
