"""Super-resolve MR scans (DICOM file, series or TCIA tree; PNG/TIFF) with a trained generator; see --help.

    python scripts/inference.py -i ~/tcia/PROSTATEx -o results/sr -opt options/train_mrdab_x2.yml \
        -w experiments/MRDAB_GAN_x2/models/net_g_latest.pth
"""
from mrsr_plugin.cli.infer import main

if __name__ == '__main__':
    main()
