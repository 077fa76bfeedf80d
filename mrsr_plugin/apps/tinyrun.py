"""Seconds-long BasicSR runs: synthetic MR-like slices, tiny option files and fresh-interpreter runs of the entry
points. Shared by the test suite and ``mrsr-selfcheck``."""
import os
import signal
import socket
import subprocess
import sys

import cv2
import numpy as np
import yaml

SCALE = 2
TINY_G = dict(num_feat=8, num_block=1, num_groups=1, growth=4)  # MRDABNet
TINY_D = dict(num_feat=8, norms=['none', 'in', 'bn'], head_feat=16)  # BNINDiscriminator


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


def tiny_options(data_root, name, total_iter=4, model_type='SRGANModel'):
    """Option dict for a seconds-long CPU run on ``data_root/{train,val}/{HR,LR}`` PNG pairs: tiny MRDABNet
    (+ BNINDiscriminator for GAN models)."""
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
        'network_g': dict(type='MRDABNet', num_in_ch=3, num_out_ch=3, **TINY_G, upscale=SCALE),
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
    if model_type in ('SRGANModel', 'MRSRGANModel'):
        opt['network_d'] = dict(type='BNINDiscriminator', num_in_ch=3, **TINY_D)
        opt['train'].update({
            'optim_d': {'type': 'Adam', 'lr': 1e-4, 'betas': [0.9, 0.99]},
            'gan_opt': {'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 1e-3},
        })
    return opt


def use_prepared_lmdb(opt, prepared, channels=1):
    """Point the train and val sets of ``opt`` at ``prepared/{train,val}/{HR,LR_x<scale>}.lmdb`` (as
    ``mrsr-prepare`` writes them), read by ProstateMRPairedDataset with ``channels`` channels; the networks get as
    many channels."""
    for phase, dataset in opt['datasets'].items():
        split = os.path.join(str(prepared), 'train' if phase == 'train' else 'val')
        dataset.update(type='ProstateMRPairedDataset', io_backend={'type': 'lmdb'}, num_channels=channels,
                       dataroot_gt=os.path.join(split, 'HR.lmdb'),
                       dataroot_lq=os.path.join(split, f'LR_x{opt["scale"]}.lmdb'))
    opt['network_g'].update(num_in_ch=channels, num_out_ch=channels)
    if 'network_d' in opt:
        opt['network_d']['num_in_ch'] = channels
    return opt


def write_options(path, opt):
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)


def run_python(args, cwd, env=None, timeout=300):
    """Run ``python *args`` in a fresh interpreter; returns the CompletedProcess with stdout and stderr merged.

    Raises:
        subprocess.TimeoutExpired: After ``timeout`` seconds, with the output so far; the interpreter and every
            process it started (torchrun's workers, data loaders) are killed.
    """
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    with subprocess.Popen([sys.executable, *args], cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True) as proc:
        try:
            output = proc.communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired as err:
            os.killpg(proc.pid, signal.SIGKILL)
            raise subprocess.TimeoutExpired(proc.args, timeout, output=proc.communicate()[0]) from err
    return subprocess.CompletedProcess(proc.args, proc.returncode, output)


def free_port():
    """A TCP port on 127.0.0.1 that is free now (for torchrun's rendezvous)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
