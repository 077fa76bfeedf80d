"""Metrics of the plugin; importing this package registers every ``*_metric.py`` module in METRIC_REGISTRY."""
from mrsr_plugin.registration import import_modules

_metric_modules = import_modules(__name__, __file__, '_metric.py')
