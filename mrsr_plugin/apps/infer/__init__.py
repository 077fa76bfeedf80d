"""Inference below the command line (:mod:`mrsr_plugin.cli.infer`, ``mrsr-infer``).

- :mod:`~mrsr_plugin.apps.infer.run`: input discovery, the run over every series, volume and image, its report.
- :mod:`~mrsr_plugin.apps.infer.core`: format-independent: :func:`~mrsr_plugin.apps.infer.core.load_generator`
  (checkpoint -> :class:`~mrsr_plugin.apps.infer.core.Upscaler`), the upscaler itself, the device choice.
- :mod:`~mrsr_plugin.apps.infer.dicom`: derived DICOM series (stored values, geometry, UIDs).
- :mod:`~mrsr_plugin.apps.infer.volumes`: NIfTI / MetaImage / NRRD -> the same format (reading and writing volume
  files, shared with lmdb_prepare, is :mod:`mrsr_plugin.mrio.volume`, as DICOM reading is
  :mod:`mrsr_plugin.mrio.dicom`).
- :mod:`~mrsr_plugin.apps.infer.images`: PNG/TIFF slices -> PNG.

Importing this package imports none of them, so readers that need no network stay light.
"""
