"""MRSRModel / MRSRGANModel: float MR metrics next to BasicSR's 8-bit ones, and 16-bit validation images."""
import glob
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.metrics.psnr_ssim import calculate_psnr
from basicsr.models import build_model
from basicsr.utils import tensor2img
from conftest import SCALE, phantom, run_python, tiny_options, write_options
from torch.utils.data import DataLoader

import mrsr_plugin.train
from mrsr_plugin.metrics.mr_metric import calculate_mr_psnr, calculate_mr_ssim

NETWORK_G = {
    'type': 'MRDABNet', 'num_in_ch': 1, 'num_out_ch': 1, 'num_feat': 8, 'num_block': 1, 'num_groups': 1, 'growth': 4,
    'upscale': SCALE
}
METRICS = {
    'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE, 'test_y_channel': False},
    'mr_psnr': {'type': 'calculate_mr_psnr', 'crop_border': SCALE},
    'mr_ssim': {'type': 'calculate_mr_ssim', 'crop_border': SCALE, 'foreground_threshold': 0.05},
}


@pytest.fixture(scope='module')
def mr16_dataset(tmp_path_factory):
    """train (4) and val (2) folders of 48x48 16-bit HR PNGs and their LR_x2 (cv2 bicubic, 16-bit)."""
    root = tmp_path_factory.mktemp('mr16')
    rng = np.random.default_rng(1)
    for split, count in (('train', 4), ('val', 2)):
        for sub in ('HR', 'LR'):
            os.makedirs(root / split / sub)
        for i in range(count):
            hr = phantom(rng, 48, bit_depth=16)
            assert len(np.unique(hr)) > 256
            lr = cv2.resize(hr, (48 // SCALE, 48 // SCALE), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(root / split / 'HR' / f'{i:03d}.png'), hr)
            cv2.imwrite(str(root / split / 'LR' / f'{i:03d}.png'), lr)
    return root


def _mr_dataset_opt(root, split, name):
    return {
        'name': name, 'type': 'ProstateMRPairedDataset', 'io_backend': {'type': 'disk'}, 'num_channels': 1,
        'dataroot_gt': str(root / split / 'HR'), 'dataroot_lq': str(root / split / 'LR')
    }


def _metric_values(log, name):
    return [float(v) for v in re.findall(rf'# {name}: ([0-9.]+)', log)]


def _assert_16_bit_greys(paths):
    assert paths
    for path in paths:
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint16 and img.shape == (48, 48), path
        assert len(np.unique(img)) > 256, path


def test_mrsrgan_training_logs_both_kinds_of_metrics_and_saves_16_bit(mr16_dataset, tmp_path):
    opt = tiny_options(mr16_dataset, 'tiny_mr_gan', total_iter=2)
    opt['model_type'] = 'MRSRGANModel'
    for phase, split in (('train', 'train'), ('val', 'val')):
        opt['datasets'][phase].update(_mr_dataset_opt(mr16_dataset, split, opt['datasets'][phase]['name']))
    opt['network_g'] = NETWORK_G
    opt['network_d']['num_in_ch'] = 1
    opt['val'].update(save_img=True, metrics=METRICS)
    proc = run_python([mrsr_plugin.train.__file__, '-opt', write_options(tmp_path / 'gan.yml', opt)], cwd=tmp_path,
                      env={'MRSR_ROOT': str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert 'Model [MRSRGANModel] is created.' in proc.stdout
    for name in METRICS:
        assert _metric_values(proc.stdout, name), name
    _assert_16_bit_greys(glob.glob(str(tmp_path / 'experiments' / 'tiny_mr_gan' / 'visualization' / '*' / '*.png')))


def _test_opt(name, metrics, pretrain_network_g=None):
    return {
        'name': name, 'model_type': 'MRSRModel', 'scale': SCALE, 'num_gpu': 0, 'is_train': False, 'dist': False,
        'network_g': NETWORK_G,
        'path': {'pretrain_network_g': pretrain_network_g, 'strict_load_g': True},
        'val': {'save_img': True, 'suffix': None, 'metrics': metrics},
    }


def test_mrsr_validation_measures_the_float_output(mr16_dataset, tmp_path):
    torch.manual_seed(0)
    opt = _test_opt('inproc', METRICS)
    # BasicSR's MSRResNet adds the bilinear upsampling of its input, so even untrained its output is close enough to
    # GT for 8-bit rounding to move the PSNR well beyond the 1e-6 tolerance below
    opt['network_g'] = {'type': 'MSRResNet', 'num_in_ch': 1, 'num_out_ch': 1, 'num_feat': 8, 'num_block': 1,
                        'upscale': SCALE}
    opt['path']['visualization'] = str(tmp_path / 'vis')
    opt['val']['save_bit_depth'] = 8
    model = build_model(opt)
    dataset = build_dataset(dict(_mr_dataset_opt(mr16_dataset, 'val', 'tiny_val'), phase='val', scale=SCALE))
    loader = DataLoader(dataset, batch_size=1)
    model.validation(loader, current_iter='inproc', tb_logger=None, save_img=True)

    expected = {name: [] for name in METRICS}
    rounded_mr_psnr = []
    for data in loader:
        model.feed_data(data)
        model.test()
        sr, gt = (x[0].clamp(0, 1).numpy().transpose(1, 2, 0) for x in (model.output, model.gt))
        sr8, gt8 = tensor2img([model.output]), tensor2img([model.gt])
        expected['psnr'].append(calculate_psnr(sr8, gt8, crop_border=SCALE))
        expected['mr_psnr'].append(calculate_mr_psnr(sr, gt, crop_border=SCALE))
        expected['mr_ssim'].append(calculate_mr_ssim(sr, gt, crop_border=SCALE, foreground_threshold=0.05))
        rounded_mr_psnr.append(calculate_mr_psnr(sr8 / 255., gt8 / 255., crop_border=SCALE))
    for name, values in expected.items():
        assert model.metric_results[name] == pytest.approx(np.mean(values), abs=1e-6), name
    # 8-bit rounding would have moved it by about 0.01 dB
    assert abs(np.mean(rounded_mr_psnr) - model.metric_results['mr_psnr']) > 1e-3

    saved = sorted(glob.glob(str(tmp_path / 'vis' / 'tiny_val' / '*_inproc.png')))
    assert [Path(p).name for p in saved] == ['000_inproc.png', '001_inproc.png']
    img = cv2.imread(saved[0], cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint8 and img.shape == (48, 48)


def test_test_entry_with_mrsr_model(mr16_dataset, tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / 'net_g.pth'
    torch.save({'params': build_network(NETWORK_G).state_dict()}, checkpoint)
    opt = _test_opt('tiny_mr_test', METRICS, str(checkpoint))
    del opt['is_train'], opt['dist']  # set by BasicSR's parse_options
    opt['datasets'] = {'test_1': _mr_dataset_opt(mr16_dataset, 'val', 'tiny_test')}
    proc = run_python([str(Path(mrsr_plugin.train.__file__).with_name('test.py')), '-opt',
                       write_options(tmp_path / 'test.yml', opt)], cwd=tmp_path, env={'MRSR_ROOT': str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert 'Model [MRSRModel] is created.' in proc.stdout
    for name in METRICS:
        assert len(_metric_values(proc.stdout, name)) == 1, name
    _assert_16_bit_greys(glob.glob(str(tmp_path / 'results' / 'tiny_mr_test' / 'visualization' / 'tiny_test' /
                                       '*_tiny_mr_test.png')))


def test_validation_logs_a_piq_metric_on_the_float_output(mr16_dataset, tmp_path):
    """HaarPSI (piq) and HFEN from val.metrics: float images in [0, 1], HFEN's best tracked as lower-is-better."""
    from mrsr_plugin.metrics.piq_metric import calculate_mr_haarpsi, calculate_mr_hfen
    torch.manual_seed(0)
    metrics = {'haarpsi': {'type': 'calculate_mr_haarpsi', 'crop_border': SCALE},
               'hfen': {'type': 'calculate_mr_hfen', 'crop_border': SCALE, 'better': 'lower'}}
    model = build_model(_test_opt('piq', metrics))
    dataset = build_dataset(dict(_mr_dataset_opt(mr16_dataset, 'val', 'tiny_val'), phase='val', scale=SCALE))
    loader = DataLoader(dataset, batch_size=1)
    model.validation(loader, current_iter=1, tb_logger=None, save_img=False)
    expected = {'haarpsi': [], 'hfen': []}
    for data in loader:
        model.feed_data(data)
        model.test()
        sr, gt = (x[0].clamp(0, 1).numpy().transpose(1, 2, 0) for x in (model.output, model.gt))
        expected['haarpsi'].append(calculate_mr_haarpsi(sr, gt, crop_border=SCALE))
        expected['hfen'].append(calculate_mr_hfen(sr, gt, crop_border=SCALE))
    for name, values in expected.items():
        assert model.metric_results[name] == pytest.approx(np.mean(values), rel=1e-6), name
        assert model.best_metric_results['tiny_val'][name] == {'better': metrics[name].get('better', 'higher'),
                                                               'val': model.metric_results[name], 'iter': 1}
