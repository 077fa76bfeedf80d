"""Through-plane super-resolution: slice-profile kernel, degradation, dataset, upscale-1 networks, a tiny training
run through BasicSR's loop, volume inference and its geometry, the evaluation."""
import glob
import inspect
import os

import cv2
import numpy as np
import pydicom
import pytest
import torch
import yaml
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.utils.registry import ARCH_REGISTRY
from conftest import REPO, phantom, run_python, tiny_options, write_options

import mrsr_plugin.train
from mrsr_plugin.archs.bicubic_arch import Bicubic
from mrsr_plugin.apps.infer.core import Upscaler
from mrsr_plugin.data.slice_profile import (ThroughPlaneConfig, hr_rows, interpolate_slices, shift_rows,
                                            slice_profile_kernel, thick_slices)
from mrsr_plugin.apps.through_plane import dicom_slice_geometry, super_resolve_through_plane, volume_geometry
from mrsr_plugin.apps.through_plane_evaluation import compared_slices, evaluate_volume
from mrsr_plugin.cli.evaluate_through_plane import main as evaluate_main
from mrsr_plugin.options import load_options

OPTION_FILES = sorted(glob.glob(os.path.join(REPO, 'options', 'through_plane', '*.yml')))
Z2_OPTIONS = os.path.join(REPO, 'options', 'through_plane', 'train_mrdab_z2.yml')  # 3 mm every 6 mm, as the demo
THIN = {'slice_thickness': 3.0, 'slice_gap': 3.0, 'target_spacing': 3.0}  # keep every other slice
THICK = {'slice_thickness': 6.0, 'slice_gap': 0.0, 'target_spacing': 3.0}  # slices twice as thick


def fwhm(values, step):
    """Width of the region where ``values`` is at least half its maximum, from a fine sampling at ``step``."""
    above = np.flatnonzero(values >= values.max() / 2)
    return (above[-1] - above[0] + 1) * step


# --- kernel and degradation ------------------------------------------------------------------------------------------
@pytest.mark.parametrize('profile', ['rect', 'gaussian'])
@pytest.mark.parametrize('thickness', [0.7, 1.0, 2.0, 3.3])
def test_kernel_integral_is_1_and_its_fwhm_is_the_slice_thickness(profile, thickness):
    assert slice_profile_kernel(thickness, profile).sum() == pytest.approx(1, abs=1e-12)
    step = 0.001
    fine = slice_profile_kernel(thickness, profile, step=step)
    assert fine.sum() == pytest.approx(1, abs=1e-12)
    assert np.allclose(fine, fine[::-1])
    assert fwhm(fine / step, step) == pytest.approx(thickness, abs=2 * step)


def test_rect_profile_over_slabs():
    """A rect as thick as a slab is the slab; twice as thick covers it and half of each neighbour."""
    assert slice_profile_kernel(1.0).tolist() == [1.0]
    assert np.allclose(slice_profile_kernel(2.0), [0.25, 0.5, 0.25])
    assert np.allclose(slice_profile_kernel(3.0), [1 / 3] * 3)
    assert len(slice_profile_kernel(1.0, 'gaussian')) > 1  # SMORE's Gaussian also blurs a one-slab slice


def test_config_scale_and_errors():
    config = ThroughPlaneConfig.from_dict({**THIN, 'inplane_spacing': 0.5})
    assert (config.scale, config.row_block, config.axis, config.profile) == (2, 6, 'random', 'rect')
    assert ThroughPlaneConfig.from_dict(THICK).scale == 2
    assert ThroughPlaneConfig.from_dict({'slice_thickness': 2, 'slice_gap': 1, 'target_spacing': 1}).scale == 3
    for bad, message in [({**THIN, 'slice_gap': 1.0}, r'\(slice_thickness \+ slice_gap\) / target_spacing'),
                         ({**THIN, 'inplane_spacing': 4.0}, 'target_spacing / inplane_spacing'),
                         ({**THIN, 'axis': 2}, 'axis'), ({**THIN, 'thickness': 3}, 'unknown'),
                         ({'slice_thickness': 3}, 'needs'), ({**THIN, 'profile': 'sinc'}, 'profile'),
                         ({**THIN, 'slice_shift': 0.3}, 'slice_shift needs inplane_spacing'),
                         ({**THIN, 'inplane_spacing': 0.5, 'slice_shift': -0.1}, 'slice_shift must be')]:
        with pytest.raises(ValueError, match=message):
            ThroughPlaneConfig.from_dict(bad)


def test_hr_rows_average_slabs_of_a_fractional_row_count():
    """0.5-mm rows into 1.8-mm slabs (3.6 rows each): exact area averages, as OpenCV's INTER_AREA computes them."""
    img = np.random.default_rng(1).random((36, 5)).astype(np.float32)
    config = ThroughPlaneConfig(slice_thickness=3.0, slice_gap=0.6, target_spacing=1.8, inplane_spacing=0.5)
    rows = hr_rows(img, config, 0)
    assert config.scale == 2 and rows.shape == (10, 5)
    assert np.allclose(rows[0], (img[:3].sum(0) + 0.6 * img[3]) / 3.6)
    assert np.allclose(rows, cv2.resize(img, (5, 10), interpolation=cv2.INTER_AREA), atol=1e-5)
    assert np.allclose(hr_rows(img, config, 1), hr_rows(img.T, config, 0))
    integer = ThroughPlaneConfig(**{**THIN, 'inplane_spacing': 0.5})
    assert np.allclose(hr_rows(img, integer, 0), img[:36].reshape(6, 6, 5).mean(1))


def test_shift_rows_moves_each_row_by_its_own_subpixel_shift():
    """Whole-pixel shifts are np.roll exactly; a half-pixel shift of a band-limited row is its samples half a pixel
    over; a row's mean is kept."""
    rng = np.random.default_rng(2)
    rows = rng.random((3, 32))
    shifted = shift_rows(rows, [0, 1, -3])
    assert np.allclose(shifted, [rows[0], np.roll(rows[1], 1), np.roll(rows[2], -3)], atol=1e-6)
    x = np.arange(64)
    wave = np.cos(2 * np.pi * 3 * x / 64)[None]
    assert np.allclose(shift_rows(wave, [0.5]), np.cos(2 * np.pi * 3 * (x - 0.5) / 64), atol=1e-6)
    assert np.allclose(shift_rows(rows, [0.3, -0.7, 2.2]).mean(1), rows.mean(1), atol=1e-6)


def test_thick_slices_and_interpolation_on_the_kept_slice_grid():
    rng = np.random.default_rng(0)
    volume = rng.random((7, 3, 4)).astype(np.float32)
    thin, thick = ThroughPlaneConfig(**THIN), ThroughPlaneConfig(**THICK)
    assert np.array_equal(thick_slices(volume, thin), volume[::2])
    expected = 0.25 * volume[1:5:2] + 0.5 * volume[2:6:2] + 0.25 * volume[3:7:2]  # thick slices 1, 2 (at 2, 4)
    assert np.allclose(thick_slices(volume, thick)[1:3], expected, atol=1e-6)
    assert np.allclose(thick_slices(volume, thick)[0], 0.75 * volume[0] + 0.25 * volume[1])  # mirrored border
    for mode in ('linear', 'cubic'):
        up = interpolate_slices(volume[::2], 2, mode)
        assert up.shape == (7, 3, 4)
        assert np.allclose(up[::2], volume[::2], atol=1e-6)  # the kept slices are kept
    assert np.allclose(interpolate_slices(volume[::2], 2, 'linear')[1::2], (volume[0:5:2] + volume[2::2]) / 2)


# --- networks --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('net_opt', [
    dict(type='MRDABNet', num_in_ch=1, num_out_ch=1, num_feat=8, num_block=1, num_groups=1, growth=4, upscale=1),
    dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=1),  # BasicSR's EDSR: RGB mean
    dict(type='SRCNN', num_in_ch=1, num_out_ch=1, num_feats=[8, 4], upscale=1),
    dict(type='FSRCNN', num_in_ch=1, num_out_ch=1, d=8, s=4, m=1, upscale=1),
])
def test_zoo_networks_run_at_upscale_1(net_opt):
    x = torch.rand(1, net_opt['num_in_ch'], 9, 14)
    with torch.no_grad():
        assert build_network(dict(net_opt))(x).shape == x.shape


@pytest.mark.parametrize('path', OPTION_FILES, ids=os.path.basename)
def test_option_files(path):
    opt = load_options(path)
    net_opt = opt['network_g']
    assert opt['scale'] == net_opt['upscale'] == 1
    assert set(net_opt) - {'type'} == set(inspect.signature(ARCH_REGISTRY.get(net_opt['type'])).parameters)
    for dataset in opt['datasets'].values():
        assert dataset['type'] == 'ProstateMRThroughPlaneDataset'
        assert ThroughPlaneConfig.from_dict(dataset['degradation']).scale == 2
    assert opt['datasets']['val']['degradation'] == opt['datasets']['train']['degradation']
    with torch.no_grad():
        assert build_network(dict(net_opt))(torch.rand(1, 1, 9, 16)).shape == (1, 1, 9, 16)


# --- dataset ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def hr_folder(tmp_path_factory):
    """HR/ with three 16-bit 33x40 phantom slices."""
    root = tmp_path_factory.mktemp('through_plane') / 'HR'
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(root / f'{i:03d}.png'), phantom(rng, 40, bit_depth=16)[:33])
    return root


def through_plane_dataset(root, phase, degradation, **extra):
    return build_dataset({'name': 'tp', 'type': 'ProstateMRThroughPlaneDataset', 'phase': phase, 'scale': 1,
                          'io_backend': {'type': 'disk'}, 'dataroot_gt': str(root), 'degradation': degradation,
                          'gt_size': [9, 16], 'use_hflip': True, 'use_vflip': True, **extra})


@pytest.mark.parametrize('setting', [THIN, THICK])
def test_validation_pair_is_the_profile_degradation_of_gt(hr_folder, setting):
    dataset = through_plane_dataset(hr_folder, 'val', {**setting, 'axis': 0})
    item = dataset[1]
    gt, lq = item['gt'][0].numpy(), item['lq'][0].numpy()
    assert gt.shape == lq.shape == (33, 40) and item['gt_path'] == item['lq_path']
    config = ThroughPlaneConfig(**setting)
    assert np.allclose(lq, np.clip(interpolate_slices(thick_slices(gt, config), 2), 0, 1), atol=1e-6)
    assert np.array_equal(dataset[1]['lq'], item['lq'])  # deterministic
    assert through_plane_dataset(hr_folder, 'val', {**setting, 'axis': 1})[1]['gt'].shape == (1, 39, 33)


def test_training_pairs_are_crops_of_the_degradation(hr_folder):
    dataset = through_plane_dataset(hr_folder, 'train', {**THIN, 'axis': 'random'})
    torch.manual_seed(0)
    for index in range(3):
        item = dataset[index]
        gt, lq = item['gt'][0].numpy(), item['lq'][0].numpy()
        assert gt.shape == lq.shape == (9, 16)
        # one-slab profile: the kept rows are the HR rows, the others cubic between them
        assert np.allclose(lq, np.clip(interpolate_slices(gt[::2], 2), 0, 1), atol=1e-6)
    with pytest.raises(ValueError, match='rows - 1 divisible'):
        through_plane_dataset(hr_folder, 'train', THIN, gt_size=16)
    with pytest.raises(ValueError, match='set scale: 1'):
        through_plane_dataset(hr_folder, 'val', THIN, scale=2)
    with pytest.raises(ValueError, match='degradation: through-plane degradation needs'):
        through_plane_dataset(hr_folder, 'val', {'slice_thickness': 3})


def test_slice_shift_moves_the_thick_slices_and_not_the_target(hr_folder):
    """slice_shift: the same crops and HR targets as without it (its draws come last), the kept (thick-slice) rows
    moved along the columns, each by its own amount; validation pairs are not shifted."""
    plain = {**THIN, 'inplane_spacing': 1.0, 'axis': 0}
    items = {}
    for shift in (0.0, 1.5):
        dataset = through_plane_dataset(hr_folder, 'train', {**plain, 'slice_shift': shift})
        torch.manual_seed(0)
        items[shift] = [dataset[index] for index in range(3)]
    for still, moved in zip(items[0.0], items[1.5]):
        assert torch.equal(still['gt'], moved['gt'])
        kept_still, kept_moved = still['lq'][0, ::2].numpy(), moved['lq'][0, ::2].numpy()
        assert np.allclose(kept_still, np.clip(still['gt'][0, ::2].numpy(), 0, 1), atol=1e-6)
        offsets = np.abs(kept_moved - kept_still).mean(1)
        assert (offsets > 1e-3).all() and len(np.unique(np.round(offsets, 6))) == len(offsets)
    val = {shift: through_plane_dataset(hr_folder, 'val', {**plain, 'slice_shift': shift})[1]['lq']
           for shift in (0.0, 1.5)}
    assert torch.equal(val[0.0], val[1.5])


def test_tiny_through_plane_run_through_basicsr_loop(hr_folder, tmp_path):
    opt = tiny_options(hr_folder.parent, 'tiny_through_plane', total_iter=2, model_type='MRSRGANModel')
    for phase, dataset in opt['datasets'].items():
        dataset.clear()
        dataset.update(name=f'tp_{phase}', type='ProstateMRThroughPlaneDataset', dataroot_gt=str(hr_folder),
                       io_backend={'type': 'disk'}, degradation=dict(THICK), phase=phase)
    opt['datasets']['train'].update(gt_size=[33, 32], use_hflip=True, use_vflip=True, num_worker_per_gpu=0,
                                    batch_size_per_gpu=2, dataset_enlarge_ratio=1)
    opt.update(scale=1)
    opt['network_g'].update(num_in_ch=1, num_out_ch=1, upscale=1, global_skip='bicubic')
    opt['network_d']['num_in_ch'] = 1
    opt['val']['metrics'] = {'mr_psnr': {'type': 'calculate_mr_psnr', 'crop_border': 0}}
    proc = run_python([mrsr_plugin.train.__file__, '-opt', write_options(tmp_path / 'tp.yml', opt)], cwd=tmp_path,
                      env={'MRSR_ROOT': str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-4000:]
    models = tmp_path / 'experiments' / 'tiny_through_plane' / 'models'
    assert 'net_g_2.pth' in os.listdir(models)
    assert '# mr_psnr:' in proc.stdout
    # the checkpoint just trained says its slice profile, so --through-plane needs nothing else
    info = torch.load(models / 'net_g_latest.pth', weights_only=True)['mrsr']
    assert info['slice_profile'] == vars(ThroughPlaneConfig(**THICK)) and info['through_plane_scale'] == 2
    assert info['scale'] == 1 and info['degradation'] is None and info['option_file'] == 'tp.yml'
    import SimpleITK as sitk
    from conftest import run_infer
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((3, 12, 10)).astype(np.float32)),
                    str(tmp_path / 'vol.nii.gz'))
    assert run_infer('-i', tmp_path / 'vol.nii.gz', '-o', tmp_path / 'sr', '-w', models / 'net_g_latest.pth',
                     '--through-plane', '-q', '--force') == 0  # 1-mm spacing, the model's 6 mm every 6 mm
    assert sitk.ReadImage(str(tmp_path / 'sr' / 'vol_SRz2.nii.gz')).GetSize() == (10, 12, 5)


# --- volume inference and geometry ----------------------------------------------------------------------------------
def identity_upscaler():
    return Upscaler(Bicubic(num_in_ch=1, upscale=1), torch.device('cpu'), reparameterize='none')


def test_volume_with_an_identity_network_is_cubic_along_z():
    rng = np.random.default_rng(0)
    volume = rng.random((5, 12, 10)).astype(np.float32)
    out = super_resolve_through_plane(identity_upscaler(), volume, 2)
    assert out.shape == (9, 12, 10)
    assert np.allclose(out, interpolate_slices(volume, 2, 'cubic'), atol=1e-6)
    assert np.allclose(super_resolve_through_plane(identity_upscaler(), volume, 3, views=['coronal']),
                       interpolate_slices(volume, 3), atol=1e-6)
    upscaler = Upscaler(Bicubic(num_in_ch=1, upscale=2), torch.device('cpu'))
    with pytest.raises(Exception, match='needs an upscale-1 network'):
        super_resolve_through_plane(upscaler, volume, 2)


def test_geometry_of_the_output_slices():
    normal = np.array([0.0, 0.3, 1.0]) / np.linalg.norm([0.0, 0.3, 1.0])  # oblique stack, 3 mm apart
    positions = np.array([-97.75, -54.37, -105.22]) + 3.0 * np.arange(4)[:, None] * normal
    geometry = dicom_slice_geometry(positions, 2, slice_locations=[-110.5, -107.5, -104.5, -101.5])
    assert geometry['positions'].shape == (7, 3)
    assert np.allclose(geometry['positions'][::2], positions)  # source slices keep their place
    assert np.allclose(geometry['positions'][1], positions[0] + 1.5 * normal)
    assert np.allclose(geometry['slice_locations'], -110.5 + 1.5 * np.arange(7))
    assert geometry['spacing'] == pytest.approx(1.5) and geometry['thickness'] == pytest.approx(1.5)
    spacing, origin, direction, size = volume_geometry((0.5, 0.5, 3.0), (1, 2, 3), np.eye(3).ravel(), (384, 384, 19),
                                                       2)
    assert spacing == (0.5, 0.5, 1.5) and origin == (1.0, 2.0, 3.0) and size == (384, 384, 37)
    assert direction == tuple(np.eye(3).ravel())


# --- evaluation ------------------------------------------------------------------------------------------------------
def test_evaluation_compares_the_slices_to_recover():
    thin, thick = ThroughPlaneConfig(**THIN), ThroughPlaneConfig(**THICK)
    assert compared_slices(thin, 7) == [1, 3, 5] and compared_slices(thick, 7) == list(range(7))
    rng = np.random.default_rng(1)
    volume = rng.random((7, 16, 12)).astype(np.float32)
    rows = evaluate_volume(volume, 'p', thin, identity_upscaler(), 'net', ['sagittal', 'coronal'])
    by_model = {m: [r['mr_psnr'] for r in rows if r['model'] == m] for m in ('linear', 'cubic', 'cubic spline', 'net')}
    assert all(len(v) == 3 for v in by_model.values())
    assert np.allclose(by_model['net'], by_model['cubic'])  # the identity network on cubic input is cubic


def test_another_tools_output_is_scored_on_the_true_slices_it_covers():
    """thick_image places thick slice k on true slice k s; a candidate that holds each true 3-mm slice as six
    0.5-mm sub-slices averages back to the true slices exactly (external_on_true_slices), and is scored on the same
    slices as the interpolations."""
    import SimpleITK as sitk

    from mrsr_plugin.apps.through_plane_evaluation import external_on_true_slices, thick_image
    from mrsr_plugin.apps.through_plane_reference import image_on
    rng = np.random.default_rng(2)
    volume = rng.random((7, 16, 12)).astype(np.float32)
    direction = tuple(np.eye(3)[:, [1, 0, 2]].ravel())  # rows along y: not the identity
    true = image_on(volume, (0.5, 0.5, 3.0), (10.0, -4.0, 7.0), direction)
    thin = ThroughPlaneConfig(**THIN)
    thick = thick_image(true, thin)
    assert sitk.GetArrayFromImage(thick).shape == (4, 16, 12) and thick.GetSpacing() == (0.5, 0.5, 6.0)
    assert np.array_equal(sitk.GetArrayFromImage(thick), volume[::2]) and thick.GetOrigin() == true.GetOrigin()

    normal = np.asarray(direction).reshape(3, 3)[:, 2]
    fine = image_on(np.repeat(volume, 6, axis=0), (0.5, 0.5, 0.5), tuple(np.asarray(true.GetOrigin()) - 1.25 * normal),
                    direction)  # sub-slice centres 1.25, 0.75, 0.25 mm on either side of each true slice's centre
    values, covered = external_on_true_slices(fine, true, 3.0)
    assert covered.all() and np.allclose(values, volume, atol=1e-6)
    shifted = image_on(np.repeat(volume, 6, axis=0), (0.5, 0.5, 0.5), true.GetOrigin(), direction)
    assert external_on_true_slices(shifted, true, 3.0)[1].tolist() == [False] + [True] * 6  # the first slab sticks out

    rows = evaluate_volume(volume, 'p', thin, None, 'net', ['sagittal'], {'tool': (values, covered)})
    keys = {m: [r['key'] for r in rows if r['model'] == m] for m in ('cubic', 'tool')}
    assert keys['tool'] == keys['cubic'] == ['p_z001', 'p_z003', 'p_z005']
    assert all(r['mr_psnr'] > 100 for r in rows if r['model'] == 'tool')


def test_evaluation_cli_errors_are_one_line(tmp_path, capsys):
    plain = tmp_path / 'plain.yml'
    plain.write_text(yaml.safe_dump({'network_g': {'type': 'Bicubic'}, 'datasets': {'train': {}}}))
    torch.save({'params': {}}, tmp_path / 'bicubic.pth')  # Bicubic has no weights
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(['-opt', str(plain), '-w', str(tmp_path / 'bicubic.pth'), '--dicom', str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (f'evaluate_through_plane: error: {plain}: no '
                                               'datasets.train.degradation: not a through-plane option file')


# --- mrsr-infer --through-plane ---------------------------------------------------------------------------------------
def test_infer_through_plane_writes_dicom_and_nifti_on_the_kept_slice_grid(tmp_path):
    """mrsr-infer --through-plane: a tiny upscale-1 MRDAB (random weights) on the embedded test patient's DICOM
    series (19 slices, 3 mm) -> 37 slices 1.5 mm apart with the source slices in place, read back by SimpleITK; the
    shipped z2 generator, by name, on an oblique NIfTI -> 2 (n - 1) + 1 slices, origin and direction kept, the slice
    spacing halved, pixel type kept."""
    import SimpleITK as sitk
    from conftest import PROSTATE_T2, run_infer

    opt = load_options(Z2_OPTIONS)
    opt['network_g'].update(num_feat=8, num_block=1, num_groups=1, growth=4)
    net = build_network(opt['network_g'])
    torch.save({'params': net.state_dict()}, tmp_path / 'net.pth')
    option_file = write_options(tmp_path / 'z2.yml', opt)
    # the test patient has contiguous 3-mm slices, z2 was trained for 3 mm every 6 mm: --force
    common = ['-opt', option_file, '-w', tmp_path / 'net.pth', '--through-plane', '-q', '--device', 'cpu', '--force']

    assert run_infer('-i', PROSTATE_T2, '-o', tmp_path / 'dicom', *common) == 0
    (folder, ) = [p for p in (tmp_path / 'dicom').iterdir() if p.is_dir()]
    assert '_SRz2_' in folder.name
    written = pydicom.dcmread(folder / 'IM0002.dcm')
    assert written.SeriesDescription.endswith(' SRz2 FORCED')
    assert written.ImageComments.startswith('warning: slice geometry mismatch, run with --force: input: 3 mm slices '
                                            'every 3 mm, model: 3 mm slices every 6 mm')
    reader = sitk.ImageSeriesReader()
    dicom_files = glob.glob(os.path.join(PROSTATE_T2, '**', '*.dcm'), recursive=True)
    (series_folder, ) = {os.path.dirname(p) for p in dicom_files}
    source = sitk.ReadImage(reader.GetGDCMSeriesFileNames(series_folder))
    result = sitk.ReadImage(reader.GetGDCMSeriesFileNames(str(folder)))
    assert result.GetSize() == (384, 384, 37) and source.GetSize() == (384, 384, 19)
    assert np.allclose(result.GetSpacing(), (*source.GetSpacing()[:2], source.GetSpacing()[2] / 2), atol=1e-4)
    assert np.allclose(result.GetOrigin(), source.GetOrigin(), atol=1e-4)
    assert np.allclose(result.GetDirection(), source.GetDirection(), atol=1e-6)
    last = result.TransformIndexToPhysicalPoint((0, 0, 36))
    assert np.allclose(last, source.TransformIndexToPhysicalPoint((0, 0, 18)), atol=1e-3)

    volume = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 900, (4, 20, 16)).astype(np.int16))
    volume.SetSpacing((0.6, 0.5, 3.0))
    volume.SetOrigin((10.0, -20.0, 5.0))
    rotation = sitk.VersorTransform((0.1, 0.2, 0.9), 0.4).GetMatrix()
    volume.SetDirection(rotation)
    sitk.WriteImage(volume, str(tmp_path / 'vol.nii.gz'))
    shipped = ['-w', 'mrdab_z2_prostate3t_demo', '--through-plane', '-q', '--device', 'cpu', '--force']
    assert run_infer('-i', tmp_path / 'vol.nii.gz', '-o', tmp_path / 'vol', *shipped) == 0  # by name, z2 its own
    out = sitk.ReadImage(str(tmp_path / 'vol' / 'vol_SRz2.nii.gz'))
    assert out.GetSize() == (16, 20, 7) and out.GetPixelID() == sitk.sitkInt16
    assert np.allclose(out.GetSpacing(), (0.6, 0.5, 1.5), atol=1e-5)
    assert np.allclose(out.GetOrigin(), volume.GetOrigin(), atol=1e-4)
    assert np.allclose(out.GetDirection(), rotation, atol=1e-5)


def test_infer_through_plane_errors_are_one_line(tmp_path, capsys):
    from conftest import run_infer
    assert run_infer('-i', tmp_path, '-o', tmp_path / 'o', '-w', 'mrdab_x2_prostate3t_demo', '--through-plane') == 2
    assert 'an in-plane x2 model (its mrsr block has no slice profile)' in capsys.readouterr().err
    assert run_infer('-i', tmp_path, '-o', tmp_path / 'o', '-w', 'mrdab_x2_prostate3t_demo', '-opt',
                     os.path.join(REPO, 'options', 'demo_mrdab_x2.yml'), '--through-plane') == 2
    assert 'not a through-plane option file' in capsys.readouterr().err


@pytest.mark.parametrize('name, option_file', [('mrdab_z2_prostate3t_demo', 'train_mrdab_z2.yml'),
                                               ('mrdab_z2_3mm_prostate3t', 'train_mrdab_3mm_contiguous.yml'),
                                               ('mrdab_z2_3mm_gap06_prostate3t', 'train_mrdab_3mm_gap06.yml')])
def test_shipped_through_plane_generator_beats_cubic_along_z_on_the_test_patient(name, option_file):
    """A shipped through-plane generator on a 128x128 region of the held-out patient's prostate, its profile
    simulated along z: MR PSNR above cubic interpolation along z on the slices it recovers (docs, Through-plane; whole
    volume: +1.22, +2.10 and +2.11 dB)."""
    from conftest import PROSTATE_T2

    from mrsr_plugin.apps.infer.core import load_generator
    from mrsr_plugin.apps.through_plane import config_from_options, through_plane_config
    from mrsr_plugin.apps.through_plane_evaluation import load_patient
    volume = load_patient(PROSTATE_T2)[:, 128:256, 128:256]
    upscaler, _ = load_generator(name, device=torch.device('cpu'))
    config = through_plane_config(upscaler.info, name)
    # the checkpoint says what its option file says
    assert config == config_from_options(os.path.join(REPO, 'options', 'through_plane', option_file))
    rows = evaluate_volume(volume, 'test', config, upscaler, 'shipped', ['sagittal', 'coronal'])
    psnr = {m: np.mean([r['mr_psnr'] for r in rows if r['model'] == m]) for m in ('cubic', 'shipped')}
    assert psnr['shipped'] > psnr['cubic'] + 0.5, psnr


def test_another_tool_on_the_test_patient_through_export_thick_and_candidate(tmp_path, capsys):
    """--export-thick writes the simulated input of the cropped test patient; a stand-in for another tool (linear
    interpolation onto 0.5-mm slices) is scored by --candidate beside the model, on the same slices."""
    import json

    import SimpleITK as sitk
    from conftest import PROSTATE_T2
    common = ['-w', 'mrdab_z2_3mm_prostate3t', '--dicom', PROSTATE_T2, '--crop', '64']
    evaluate_main([*common, '--export-thick', str(tmp_path / 'thick.nii.gz')])
    assert 'slices every 6 mm simulated from its 3-mm slices' in capsys.readouterr().out
    thick = sitk.ReadImage(str(tmp_path / 'thick.nii.gz'))
    assert thick.GetSize() == (64, 64, 10) and thick.GetSpacing()[2] == pytest.approx(6.0, abs=1e-3)
    size, spacing = thick.GetSize(), thick.GetSpacing()
    fine = sitk.Resample(thick, (*size[:2], 9 * 12 + 1), sitk.Transform(), sitk.sitkLinear, thick.GetOrigin(),
                         (*spacing[:2], spacing[2] / 12), thick.GetDirection())
    sitk.WriteImage(fine, str(tmp_path / 'tool.nii.gz'))
    evaluate_main([*common, '--name', 'z2_3mm', '--candidate', f'tool={tmp_path / "tool.nii.gz"}', '--json',
                   str(tmp_path / 'r.json')])
    rows = json.loads((tmp_path / 'r.json').read_text())['rows']
    keys = {m: [r['key'] for r in rows if r['model'] == m] for m in ('cubic', 'z2_3mm', 'tool')}
    assert keys['tool'] == keys['cubic'] == keys['z2_3mm'] and 15 <= len(keys['tool']) < 19  # the end slabs stick out
    psnr = {m: np.mean([r['mr_psnr'] for r in rows if r['model'] == m]) for m in ('linear', 'tool', 'z2_3mm')}
    assert abs(psnr['tool'] - psnr['linear']) < 1.5 < psnr['z2_3mm'] - psnr['linear'], psnr


# --- slice geometry and data consistency (issue 21) -------------------------------------------------------------------
def write_nifti(path, array, spacing):
    import SimpleITK as sitk
    image = sitk.GetImageFromArray(np.asarray(array, np.float32))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def test_acquisition_of_a_model_and_its_tolerance():
    from mrsr_plugin.apps.through_plane import Acquisition, check_acquisition, shipped_models_fitting
    thin, thick = ThroughPlaneConfig(**THIN), ThroughPlaneConfig(**THICK)
    assert str(Acquisition.of_model(thin)) == '3 mm slices every 6 mm'
    assert str(Acquisition.of_model(thick)) == '6 mm slices every 6 mm'
    assert Acquisition(3.3, 6.6).fits(thin) and not Acquisition(3.0, 7.2).fits(thin)  # 15%: 6.9 mm is the edge
    assert not Acquisition(3.0, 3.0).fits(thin) and not Acquisition(3.0, 6.0).fits(thick)
    assert shipped_models_fitting(Acquisition(3.0, 6.0)) == ['mrdab_z2_prostate3t_demo']
    assert shipped_models_fitting(Acquisition(6.0, 6.0)) == ['mrdab_z2thick_prostate3t_demo']
    assert shipped_models_fitting(Acquisition(3.0, 3.6)) == ['mrdab_z2_3mm_gap06_prostate3t']
    assert shipped_models_fitting(Acquisition(4.0, 4.0)) == []
    with pytest.raises(ValueError) as info:
        check_acquisition(Acquisition(3.0, 3.0), thin)
    assert str(info.value) == ('slice geometry mismatch: input: 3 mm slices every 3 mm, model: 3 mm slices every 6 mm '
                               '(tolerance 15%); shipped models that fit: mrdab_z2_3mm_prostate3t; --force runs it '
                               'anyway')
    with pytest.raises(ValueError, match='none shipped fits'):
        check_acquisition(Acquisition(4.0, 4.0), thin)
    assert 'mismatch, run with --force' in check_acquisition(Acquisition(3.0, 3.0), thin, force=True)
    assert check_acquisition(Acquisition(3.0, 6.0), thin) is None
    assert 'assumed' in check_acquisition(Acquisition(6.0, 6.0, assumed=True), thick)


@pytest.mark.parametrize('setting', [THIN, THICK, {**THIN, 'profile': 'gaussian'},
                                     {'slice_thickness': 2.0, 'slice_gap': 1.0, 'target_spacing': 1.0}])
def test_data_consistency_reproduces_the_acquired_slices(setting):
    """After the step the forward model gives back the acquired slices (NRMSE < 1e-5); it changes the volume by no
    more than the bound, and a thin profile's acquired slices are copied back verbatim, the others untouched."""
    from mrsr_plugin.data.slice_profile import (hr_rows, consistency_bound, consistency_nrmse, enforce_data_consistency,
                                                forward_matrix)
    config = ThroughPlaneConfig(**setting)
    rng = np.random.default_rng(2)
    output = rng.random((config.scale * 6 + 1, 5, 4)).astype(np.float32)
    assert np.allclose(forward_matrix(len(output), config) @ output.reshape(len(output), -1),
                       thick_slices(output, config).reshape(7, -1), atol=1e-6)
    acquired = rng.random((7, 5, 4)).astype(np.float32)
    before = consistency_nrmse(output, acquired, config)
    assert before > 0.1
    fixed = enforce_data_consistency(output, acquired, config)
    assert consistency_nrmse(fixed, acquired, config) < 1e-5
    residual = np.linalg.norm((thick_slices(output, config) - acquired).reshape(7, -1), axis=0)
    change = np.linalg.norm((fixed - output).reshape(len(output), -1), axis=0)
    assert np.all(change <= consistency_bound(len(output), config) * residual * (1 + 1e-5))
    if setting == THIN:
        assert np.array_equal(fixed[::2], acquired) and np.array_equal(fixed[1::2], output[1::2])


def test_infer_refuses_a_slice_geometry_mismatch_in_one_line_and_force_warns(tmp_path, capsys):
    """The shipped z2 model (3 mm every 6 mm) on a contiguous 3-mm NIfTI: skipped in one line naming both geometries;
    --force writes it, with the warning in the report and the NIfTI description; a 3-mm-thick 6-mm-spaced input runs."""
    import json

    import SimpleITK as sitk
    from conftest import run_infer
    volume = np.random.default_rng(0).random((4, 12, 10))
    (tmp_path / 'in').mkdir()
    write_nifti(tmp_path / 'in' / 'contiguous.nii.gz', volume, (0.5, 0.5, 3.0))
    common = ['-w', 'mrdab_z2_prostate3t_demo', '--through-plane', '-q', '--device', 'cpu']
    assert run_infer('-i', tmp_path / 'in', '-o', tmp_path / 'out', *common) == 2  # nothing usable
    lines = [line for line in capsys.readouterr().err.splitlines() if 'mismatch' in line]
    assert len(lines) == 1 and lines[0].startswith('skipped contiguous.nii.gz: slice geometry mismatch: input: 3 mm '
                                                   'slices every 3 mm (thickness assumed = spacing; set it with '
                                                   '--slice-thickness), model: 3 mm slices every 6 mm'), lines
    assert 'shipped models that fit: mrdab_z2_3mm_prostate3t' in lines[0]

    assert run_infer('-i', tmp_path / 'in', '-o', tmp_path / 'forced', *common, '--force') == 0
    assert 'warning: contiguous.nii.gz: slice geometry mismatch, run with --force' in capsys.readouterr().err
    (entry, ) = json.loads((tmp_path / 'forced' / 'mrsr-infer-report.json').read_text())['produced']
    assert 'mismatch, run with --force' in entry['geometry_warning']
    assert entry['data_consistency'] and entry['data_consistency_nrmse'] < 1e-5 and entry['network_nrmse'] > 0
    out = sitk.ReadImage(str(tmp_path / 'forced' / 'contiguous_SRz2.nii.gz'))
    assert 'warning: slice geometry mismatch' in out.GetMetaData('descrip')

    from conftest import PROSTATE_T2  # DICOM: SliceThickness 3, positions 3 mm apart
    assert run_infer('-i', PROSTATE_T2, '-o', tmp_path / 'dicom', *common) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if 'mismatch' in line]
    assert len(lines) == 1 and ('slice geometry mismatch: input: 3 mm slices every 3 mm, model: 3 mm slices every '
                                '6 mm (tolerance 15%); shipped models that fit: mrdab_z2_3mm_prostate3t') in lines[0], lines

    write_nifti(tmp_path / 'in' / 'contiguous.nii.gz', volume, (0.5, 0.5, 6.0))
    assert run_infer('-i', tmp_path / 'in', '-o', tmp_path / 'fits', *common, '--slice-thickness', '3') == 0
    (entry, ) = json.loads((tmp_path / 'fits' / 'mrsr-infer-report.json').read_text())['produced']
    assert entry['input_geometry'] == '3 mm slices every 6 mm' and 'geometry_warning' not in entry


def test_shipped_z2_model_keeps_the_acquired_slices(tmp_path):
    """mrdab_z2_prostate3t_demo on a matching series (every other slice of the test patient: 3 mm every 6 mm, a
    128x128 region): with data consistency the acquired slices are the output's slices 2k; without, the report
    gives the network's own NRMSE."""
    import json

    import SimpleITK as sitk
    from conftest import PROSTATE_T2, run_infer

    from mrsr_plugin.apps.through_plane_evaluation import load_patient
    acquired = load_patient(PROSTATE_T2)[::2, 128:256, 128:256]
    write_nifti(tmp_path / 'z6.nii', acquired, (0.5, 0.5, 6.0))
    common = ['-i', tmp_path / 'z6.nii', '-w', 'mrdab_z2_prostate3t_demo', '--through-plane', '-q', '--device', 'cpu',
              '--slice-thickness', '3']
    assert run_infer(*common, '-o', tmp_path / 'dc') == 0
    out = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / 'dc' / 'z6_SRz2.nii')))
    assert np.allclose(out[::2], acquired, atol=1e-5)
    (dc, ) = json.loads((tmp_path / 'dc' / 'mrsr-infer-report.json').read_text())['produced']
    assert dc['data_consistency_nrmse'] < 1e-6 and 0.5 < dc['inplane_hf_ratio'] < 2
    assert run_infer(*common, '-o', tmp_path / 'raw', '--no-data-consistency') == 0
    (raw, ) = json.loads((tmp_path / 'raw' / 'mrsr-infer-report.json').read_text())['produced']
    assert raw['data_consistency'] is False and raw['data_consistency_nrmse'] == raw['network_nrmse'] > 1e-4
    assert raw['network_nrmse'] == pytest.approx(dc['network_nrmse'])
