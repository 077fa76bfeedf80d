"""Test splits that mix matrix sizes, pixel spacings and sources (conftest's ``mixed_sizes_prepared``: 384x384 DICOM
and a 320x320 NIfTI patient) through BasicSR validation, scripts/evaluate.py and scripts/benchmark_zoo.py."""
import csv
import json
import os
import re

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs import build_network
from conftest import REPO, run_python, tiny_options, write_options
from mmengine.analysis import get_model_complexity_info

import mrsr_plugin.train
from mrsr_plugin.apps.evaluation import evaluate, load_split, score_slices
from mrsr_plugin.apps.infer.core import Upscaler
from mrsr_plugin.apps.tinyrun import use_prepared_lmdb
from mrsr_plugin.archs.bicubic_arch import Bicubic

SIZES = {'case0002': 160, 'case0003': 192}  # LR side per test patient: the resampled NIfTI one, the DICOM one


def test_the_test_split_mixes_sizes(mixed_sizes_prepared):
    slices = load_split(str(mixed_sizes_prepared), 'test', 2)
    assert [(key[:8], lr.shape, hr.shape) for key, lr, hr in slices] == [
        (case, (side, side), (2 * side, 2 * side)) for case, side in SIZES.items() for _ in range(4)]


def test_batches_break_where_the_size_changes(mixed_sizes_prepared):
    """Each batch holds one size, in order; every slice comes out as it does alone."""
    slices = load_split(str(mixed_sizes_prepared), 'test', 2)
    lr = [slices[i][1] for i in (0, 1, 2, 4, 5, 3)]  # 160, 160, 160, 192, 192, 160
    upscaler = Upscaler(Bicubic(num_in_ch=1, upscale=2), torch.device('cpu'), batch=2)
    batches = list(upscaler.batches(lr, quiet=True))
    assert [b.shape for b in batches] == [(2, 320, 320), (1, 320, 320), (2, 384, 384), (1, 320, 320)]
    for img, out in zip(lr, (sr for batch in batches for sr in batch)):
        assert np.array_equal(out, next(upscaler.batches(img[None], quiet=True))[0])


def test_evaluate_scores_each_slice_at_its_own_size(mixed_sizes_prepared):
    slices = load_split(str(mixed_sizes_prepared), 'test', 2)
    bicubic = Upscaler(Bicubic(num_in_ch=1, upscale=2), torch.device('cpu'), batch=3)
    rows, outputs = evaluate({'bicubic': bicubic}, slices, 2, ['mr_psnr'])
    assert {key: sr.shape for key, sr in outputs['bicubic'].items()} == {key: hr.shape for key, _, hr in slices}
    alone = [next(bicubic.batches(lr[None], quiet=True))[0] for _, lr, _ in slices]
    assert rows == score_slices('bicubic', alone, slices, 2, ['mr_psnr'])
    assert all(25 < r['mr_psnr'] < 45 for r in rows)


@pytest.fixture(scope='module')
def trained(mixed_sizes_prepared, tmp_path_factory):
    """A tiny 1-channel MRDAB trained 2 iterations through BasicSR, validating on the mixed test split with a float
    and an 8-bit metric and saving the images; (folder, option file, checkpoint, training output)."""
    root = tmp_path_factory.mktemp('mixed_train')
    opt = use_prepared_lmdb(tiny_options(root, 'tiny_mixed', total_iter=2, model_type='MRSRModel'),
                            mixed_sizes_prepared)
    opt['datasets']['val'].update(dataroot_gt=str(mixed_sizes_prepared / 'test' / 'HR.lmdb'),
                                  dataroot_lq=str(mixed_sizes_prepared / 'test' / 'LR_x2.lmdb'))
    opt['val'].update(save_img=True, metrics={
        'mr_psnr': {'type': 'calculate_mr_psnr', 'crop_border': 2, 'data_range': 1.0},
        'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': False}})
    opt_file = write_options(root / 'tiny_mixed.yml', opt)
    proc = run_python([mrsr_plugin.train.__file__, '-opt', opt_file], cwd=root, env={'MRSR_ROOT': str(root)})
    assert proc.returncode == 0, proc.stdout[-4000:]
    return root, opt_file, root / 'experiments' / 'tiny_mixed' / 'models' / 'net_g_latest.pth', proc.stdout


def test_training_validates_on_mixed_sizes(trained, mixed_sizes_prepared):
    root, _, checkpoint, log = trained
    assert checkpoint.is_file()
    assert re.search(r'# mr_psnr: [0-9.]+', log) and re.search(r'# psnr: [0-9.]+', log), log[-3000:]
    saved = root / 'experiments' / 'tiny_mixed' / 'visualization'  # <key>/<key>_<iter>.png, every validation
    sizes = {key: {cv2.imread(str(saved / key / png), cv2.IMREAD_UNCHANGED).shape for png in os.listdir(saved / key)}
             for key in os.listdir(saved)}
    assert len(sizes) == 8 and all(shapes == {(2 * SIZES[key[:8]], ) * 2} for key, shapes in sizes.items()), sizes


def test_evaluate_script_on_mixed_sizes(trained, mixed_sizes_prepared, tmp_path):
    _, opt_file, checkpoint, _ = trained
    proc = run_python(['scripts/evaluate.py', '-opt', opt_file, '-w', str(checkpoint), '--data',
                       str(mixed_sizes_prepared), '--metrics', 'mr_psnr', 'mr_ssim', '--resamples', '200', '--json',
                       str(tmp_path / 'result.json'), '--panel', str(tmp_path / 'panel.png')], cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:]
    result = json.loads((tmp_path / 'result.json').read_text())
    for model in ('bicubic', 'model'):
        assert {p: v['slices'] for p, v in result['summary'][model].items()} == {**{p: 4 for p in SIZES}, 'mean': 8}
    assert result['statistics']['patients'] == 2 and result['statistics']['slices'] == 8
    assert (tmp_path / 'panel.png').stat().st_size > 0


def test_benchmark_zoo_on_mixed_sizes(trained, mixed_sizes_prepared, tmp_path):
    root, opt_file, _, _ = trained
    out = tmp_path / 'bench'
    proc = run_python(['scripts/benchmark_zoo.py', '--data', str(mixed_sizes_prepared), '--split', 'test',
                       '--options', opt_file, os.path.join(REPO, 'options', 'zoo', 'test_bicubic_x2.yml'),
                       '--checkpoints', str(root / 'experiments'), '--output', str(out), '--metrics', 'mr_psnr',
                       '--resamples', '200'],
                      cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    results = json.loads((out / 'results.json').read_text())['results']
    assert [r['slices'] for r in results] == [8, 8]
    ours, bicubic = results
    assert ours['lr_shapes'] == {'1x160x160': 4, '1x192x192': 4} and bicubic['lr_shapes'] == {
        '3x160x160': 4, '3x192x192': 4}
    with open(opt_file) as f:
        net = build_network(yaml.safe_load(f)['network_g'])
    macs = [get_model_complexity_info(net, input_shape=(1, s, s), show_table=False, show_arch=False)['flops']
            for s in SIZES.values()]
    assert ours['macs_per_slice'] == round(sum(macs) / 2) and bicubic['macs_per_slice'] == 0
    with open(out / 'table4.csv') as f:
        table4 = list(csv.DictReader(f))
    assert table4[0]['LR sizes (slices)'] == '1x160x160 (4), 1x192x192 (4)'
    with open(out / 'patients.csv') as f:
        patients = [row for row in csv.DictReader(f) if row['patient'] != 'mean']
    assert sorted((row['patient'], row['slices']) for row in patients) == sorted(
        (p, '4') for p in SIZES for _ in range(2))
