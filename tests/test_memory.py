"""Memory bounded by the work: lmdb_prepare imports neither torch nor BasicSR (torch's CUDA build alone is about
0.7 GB of resident memory); inference holds one slice per forward on a CPU, and MRDABNet never makes its largest
feature maps whole (the peaks themselves: scripts/benchmark_prepare.py, scripts/benchmark_infer_memory.py)."""
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import MIXED_SLICES, REPO, run_python, series_files

from mrsr_plugin.apps.infer.core import DEFAULT_BATCH, Upscaler
from mrsr_plugin.apps.tinyrun import TINY_G
from mrsr_plugin.archs.mrdab_arch import MRDABNet

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


def _tiny_mrdab(upscale, num_out_ch=1):
    torch.manual_seed(upscale)
    net = MRDABNet(num_in_ch=num_out_ch, num_out_ch=num_out_ch, **TINY_G, upscale=upscale, global_skip='bicubic')
    for p in net.conv_last.parameters():  # zero-initialised with the bicubic skip: give it something to fold
        torch.nn.init.normal_(p, std=0.1)
    return net.eval()


def _module_outputs(net, x):
    """(output, shapes of the tensors the modules of ``net`` return) of ``net(x)`` without autograd."""
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape))) for m in net.modules()
             if m is not net]
    with torch.no_grad():
        out = net(x)
    for hook in hooks:
        hook.remove()
    return out, shapes


@pytest.mark.parametrize('upscale', [2, 3, 4])
def test_fold_never_makes_the_feature_map_at_the_output_size(upscale):
    """'fold' moves conv_last before the last pixel shuffle: same output, and no module returns num_feat channels at
    the output size (the largest map of a forward, 0.3 GB per 384x384 slice at x4)."""
    net, x = _tiny_mrdab(upscale), torch.rand(2, 1, 12, 10)
    folded = net.reparameterized('fold')
    for n in (net, folded):
        n.tail_band_rows = 0
    plain, plain_shapes = _module_outputs(net, x)
    out, shapes = _module_outputs(folded, x)
    torch.testing.assert_close(out, plain, rtol=0, atol=1e-5)
    feature_map_at_output_size = (2, TINY_G['num_feat'], 12 * upscale, 10 * upscale)
    assert feature_map_at_output_size in plain_shapes and feature_map_at_output_size not in shapes


@pytest.mark.parametrize('upscale,channels', [(2, 1), (4, 1), (4, 3), (3, 3)])
def test_upsampling_tail_in_bands_equals_it_whole(upscale, channels):
    """Without autograd the tail runs in bands of tail_band_rows rows (with a halo): the same output, in the same
    memory format, and its largest map is a band's, not the slice's."""
    net = _tiny_mrdab(upscale, channels).reparameterized('fold').to(memory_format=torch.channels_last)
    x = torch.rand(2, channels, 37, 9).contiguous(memory_format=torch.channels_last)
    net.tail_band_rows = 0
    whole, shapes = _module_outputs(net, x)
    largest = max(np.prod(shape) for shape in shapes)
    for rows in (1, 5, 36):
        net.tail_band_rows = rows
        banded, shapes = _module_outputs(net, x)
        torch.testing.assert_close(banded, whole, rtol=0, atol=1e-6)
        assert banded.is_contiguous(memory_format=torch.channels_last) == whole.is_contiguous(
            memory_format=torch.channels_last)
        if rows == 5:  # 5 rows and a halo of 2-4 in place of 37 (the body's LR maps are smaller than the tail's)
            assert max(np.prod(shape) for shape in shapes) < largest / 2


def test_inference_on_a_cpu_runs_one_slice_per_forward():
    """On a CPU batching is no faster per slice and every slice in a batch adds its activations to the peak, so
    the default batch is 1 there; slices go through the network one batch at a time."""
    seen = []

    class Recording(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, x):
            seen.append(x.shape[0])
            return torch.nn.functional.pixel_shuffle(self.conv(x), 2)

    upscaler = Upscaler(Recording(), torch.device('cpu'))
    assert upscaler.batch == DEFAULT_BATCH['cpu'] == 1
    seen.clear()  # the scale probe
    outputs = list(upscaler.batches(np.zeros((3, 8, 8), np.float32), quiet=True))
    assert seen == [1, 1, 1] and [o.shape for o in outputs] == [(1, 16, 16)] * 3
    assert Upscaler(Recording(), torch.device('cpu'), batch=2).batch == 2
