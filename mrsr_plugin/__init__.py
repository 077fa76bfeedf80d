"""mrsr_plugin: MR image super-resolution for BasicSR (MRDAB-GAN, GUAN et al., J. Donghua Univ. 2025).

Importing the package makes sure the plugin is registered into BasicSR's registries once ``basicsr`` is imported
(installed copies do this through ``mrsr_plugin_hook.pth`` even without importing the package).
"""
import mrsr_plugin_hook

from mrsr_plugin.version import __version__

__all__ = ['__version__']

mrsr_plugin_hook.install()
