"""MR I/O, above the plugin core and below the applications: DICOM (:mod:`.dicom`), volume files (:mod:`.volume`),
intensity normalisation (:mod:`.intensity`), LMDB writing (:mod:`.lmdb`). No torch, no BasicSR."""
