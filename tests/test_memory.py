"""Memory bounded by the work: lmdb_prepare imports neither torch nor BasicSR (torch's CUDA build alone is about
0.7 GB of resident memory)."""
import shutil

import SimpleITK as sitk
from conftest import MIXED_SLICES, REPO, series_files, run_python

PREPARE_AND_LIST_MODULES = """
import runpy, sys
sys.argv = ['lmdb_prepare.py'] + sys.argv[1:]
runpy.run_path('scripts/lmdb_prepare.py', run_name='__main__')
print('heavy:', sorted(m for m in ('torch', 'basicsr', 'torchvision', 'scipy', 'matplotlib') if m in sys.modules))
"""


def test_prepare_imports_neither_torch_nor_basicsr(tmp_path):
    """A DICOM series and a NIfTI volume through scripts/lmdb_prepare.py with every degradation (MATLAB bicubic,
    blur, Rician noise, motion), then k-space down-sampling: no torch, no BasicSR in the process."""
    tree = tmp_path / 'input'
    (tree / 'dicom').mkdir(parents=True)
    files = series_files('Prostate3T-03-0005')[MIXED_SLICES]
    for file in files:
        shutil.copy(file, tree / 'dicom')
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    sitk.WriteImage(reader.Execute()[96:288, 96:288, :], str(tree / 'volume.nii.gz'))
    for out, flags in (('bicubic', ['--blur-sigma', '0.5', '--noise-sigma', '0.01', '--motion-prob', '1']),
                       ('kspace', ['--downsample', 'kspace'])):
        proc = run_python(['-c', PREPARE_AND_LIST_MODULES, str(tree), str(tmp_path / out), '--scales', '2', '4',
                           '--quiet', *flags], cwd=REPO)
        assert proc.returncode == 0 and 'slices from 2 inputs' in proc.stdout, proc.stdout
        assert proc.stdout.splitlines()[-1] == 'heavy: []', proc.stdout
