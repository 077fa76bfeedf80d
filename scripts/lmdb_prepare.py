"""Turn a TCIA DICOM download (or PNG/TIFF slices) into patient-split BasicSR LMDBs; see --help.

    python scripts/lmdb_prepare.py ~/tcia/PROSTATEx datasets/prostate_mr --scales 2 4 --max-slices 2000 250 250
"""
from mrsr_plugin.cli.prepare import main

if __name__ == '__main__':
    main()
