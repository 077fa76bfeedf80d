"""Training/validation models of the plugin; importing this package registers every ``*_model.py`` module in
MODEL_REGISTRY."""
from mrsr_plugin.registration import import_modules

_model_modules = import_modules(__name__, __file__, '_model.py')
