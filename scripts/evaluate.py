"""Test a trained generator against bicubic interpolation on a prepared split, per patient; see --help.

    python scripts/evaluate.py -w experiments/demo_MRDAB_GAN_x2/models/net_g_latest.pth \
        --data datasets/prostate3t_prepared --split test --panel fig7_test.png
"""
from mrsr_plugin.cli.evaluate import main

if __name__ == '__main__':
    main()
