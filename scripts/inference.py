"""Super-resolve MR scans (DICOM file, series or TCIA tree; PNG/TIFF) with a trained generator; see --help.

    python scripts/inference.py -i ~/tcia/PROSTATEx -o results/sr -w experiments/MRDAB_GAN_x2/models/net_g_latest.pth
"""
from mrsr_plugin.cli.infer import main

if __name__ == '__main__':
    main()
