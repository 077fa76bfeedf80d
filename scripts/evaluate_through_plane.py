"""Test a through-plane generator against linear, cubic and cubic-spline interpolation along z on real volumes
(simulated setting), or with --reference against the same session's real sagittal and coronal series; see --help,
mrsr_plugin/apps/through_plane_evaluation.py and mrsr_plugin/apps/through_plane_reference.py.

    python scripts/evaluate_through_plane.py \
        -w experiments/through_plane_MRDAB_GAN_z2/models/net_g_latest.pth --dicom datasets/prostate3t/Prostate3T-03-0005
    python scripts/evaluate_through_plane.py -w NAME --dicom AXIAL_SERIES --reference SAGITTAL CORONAL --json out.json
"""
from mrsr_plugin.cli.evaluate_through_plane import main

if __name__ == '__main__':
    main()
