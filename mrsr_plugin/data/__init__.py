"""MR data: DICOM reading, degradations, LMDB preparation; importing this package registers every
``*_dataset.py`` module in DATASET_REGISTRY."""
from mrsr_plugin.registration import import_modules

_dataset_modules = import_modules(__name__, __file__, '_dataset.py')
