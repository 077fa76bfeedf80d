"""Shared fixtures: a tiny paired MR-like dataset and tiny option files for subprocess training runs."""
import functools
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

SCALE = 2
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROSTATE_T2 = os.path.join(REPO, 'datasets', 'prostate3t', 'Prostate3T-03-0005')  # the test patient


@functools.lru_cache
def prostate_t2_slice(index=9):
    """Slice ``index`` of the embedded test patient's T2 series (real prostate MR, 384x384), normalised to [0, 1]
    with the 0.5 / 99.5 percentile window of the volume, as ``lmdb_prepare.py`` does; float64, read-only."""
    from mrsr_plugin.data.dicom_io import load_series, scan_dicom_tree
    from mrsr_plugin.data.prepare import normalise
    (series, ), _ = scan_dicom_tree(PROSTATE_T2)
    img = normalise(load_series(series), 'percentile', (0.5, 99.5))[0][index]
    img.flags.writeable = False
    return img


def phantom(rng, size, bit_depth=8):
    """Smooth grey 'anatomy' (ellipses on air) with noise, (size, size) uint8 or uint16."""
    img = np.zeros((size, size), np.float32)
    for _ in range(4):
        centre = tuple(int(v) for v in rng.integers(8, size - 8, 2))
        axes = tuple(int(v) for v in rng.integers(4, size // 3, 2))
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(0.3, 1)), -1)
    img = cv2.GaussianBlur(img, (5, 5), 1.0) + rng.normal(0, 0.02, img.shape)
    peak = 2**bit_depth - 1
    return np.round(np.clip(img, 0, 1) * peak).astype(np.uint8 if bit_depth == 8 else np.uint16)


@pytest.fixture(scope='session')
def tiny_dataset(tmp_path_factory):
    """Folder with train/val HR and LR_bicx2 PNG pairs (6 train 48x48, 2 val 40x40)."""
    root = tmp_path_factory.mktemp('tiny_mr')
    rng = np.random.default_rng(0)
    for split, count, size in (('train', 6, 48), ('val', 2, 40)):
        for sub in ('HR', 'LR'):
            os.makedirs(root / split / sub)
        for i in range(count):
            hr = phantom(rng, size)
            lr = cv2.resize(hr, (size // SCALE, size // SCALE), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(root / split / 'HR' / f'{i:03d}.png'), hr)
            cv2.imwrite(str(root / split / 'LR' / f'{i:03d}.png'), lr)
    return root


def tiny_options(data_root, name, total_iter=4, model_type='SRGANModel'):
    """Option dict for a seconds-long CPU run: tiny MRDABNet (+ BNINDiscriminator for GAN models)."""
    opt = {
        'name': name,
        'model_type': model_type,
        'scale': SCALE,
        'num_gpu': 0,
        'manual_seed': 0,
        'datasets': {
            'train': {
                'name': 'tiny_train', 'type': 'PairedImageDataset', 'io_backend': {'type': 'disk'},
                'dataroot_gt': str(data_root / 'train' / 'HR'), 'dataroot_lq': str(data_root / 'train' / 'LR'),
                'filename_tmpl': '{}', 'gt_size': 32, 'use_hflip': True, 'use_rot': True,
                'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 4, 'prefetch_mode': None
            },
            'val': {
                'name': 'tiny_val', 'type': 'PairedImageDataset', 'io_backend': {'type': 'disk'},
                'dataroot_gt': str(data_root / 'val' / 'HR'), 'dataroot_lq': str(data_root / 'val' / 'LR')
            },
        },
        'network_g': {
            'type': 'MRDABNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'num_groups': 1,
            'growth': 4, 'upscale': SCALE
        },
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {
            'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
            'total_iter': total_iter,
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
        },
        'val': {
            'val_freq': 2, 'save_img': False,
            'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE, 'test_y_channel': False}}
        },
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False},
        'dist_params': {'backend': 'nccl', 'port': 29500},
    }
    if model_type == 'SRGANModel':
        opt['network_d'] = {'type': 'BNINDiscriminator', 'num_in_ch': 3, 'num_feat': 8, 'norms': ['none', 'in', 'bn'],
                            'head_feat': 16}
        opt['train'].update({
            'optim_d': {'type': 'Adam', 'lr': 1e-4, 'betas': [0.9, 0.99]},
            'gan_opt': {'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 1e-3},
        })
    return opt


def write_options(path, opt):
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)


def run_python(args, cwd, env=None, timeout=300):
    """Run ``python *args`` in a fresh interpreter; returns the CompletedProcess with stdout and stderr merged."""
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROSTATE_SPLIT = os.path.join(REPO_ROOT, 'datasets', 'prostate3t_split.json')


@pytest.fixture(scope='session')
def prostate3t_prepared(tmp_path_factory):
    """The embedded Prostate-3T patients prepared as ``make demo`` does (x2 and x4; 3 train, 1 val, 1 test patient)."""
    out = tmp_path_factory.mktemp('prostate3t') / 'prepared'
    proc = run_python(['scripts/lmdb_prepare.py', os.path.join(REPO_ROOT, 'datasets', 'prostate3t'), str(out),
                       '--split-file', PROSTATE_SPLIT, '--scales', '2', '4', '--quiet'], cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout
    return out
