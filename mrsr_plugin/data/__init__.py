"""MR data: the datasets (``*_dataset.py``, registered in DATASET_REGISTRY by
:func:`mrsr_plugin.registration.register` when basicsr is imported), the degradations and the 16-bit image codec.

Importing this package imports nothing else: ``lmdb_prepare`` uses the degradations and the codec without torch or
BasicSR (importing torch's CUDA build alone costs about 0.7 GB of resident memory).
"""
