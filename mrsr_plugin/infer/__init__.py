"""Inference below the command line (:mod:`mrsr_plugin.inference`, ``mrsr-infer``).

- :mod:`~mrsr_plugin.infer.core`: format-independent: :func:`~mrsr_plugin.infer.core.load_generator` (network_g
  and checkpoint -> :class:`~mrsr_plugin.infer.core.Upscaler`), the upscaler itself, the device choice.
- :mod:`~mrsr_plugin.infer.dicom`: derived DICOM series (stored values, geometry, UIDs).
- :mod:`~mrsr_plugin.infer.volumes`: NIfTI / MetaImage / NRRD -> the same format (reading and writing volume files,
  shared with lmdb_prepare, is :mod:`mrsr_plugin.data.volume_io`, as DICOM reading is
  :mod:`mrsr_plugin.data.dicom_io`).
- :mod:`~mrsr_plugin.infer.images`: PNG/TIFF slices -> PNG.

Importing this package imports none of them, so readers that need no network stay light.
"""
