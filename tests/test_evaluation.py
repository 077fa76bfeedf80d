"""Per-patient evaluation against bicubic (mrsr_plugin.evaluation, scripts/evaluate.py)."""
import json

import numpy as np
import pytest
import torch
import yaml
from basicsr.archs import build_network
from conftest import REPO, run_python

from mrsr_plugin.archs.bicubic_arch import Bicubic
from mrsr_plugin.evaluation import evaluate, format_table, load_split, nyquist_energy, patient_of, summarise
from mrsr_plugin.infer.core import Upscaler


def test_nyquist_energy_sees_a_checkerboard_and_not_a_smooth_image():
    y, x = np.mgrid[:64, :64]
    smooth = np.sin(2 * np.pi * 3 * x / 64) + np.cos(2 * np.pi * 2 * y / 64)  # periodic: no leakage
    checker = ((x + y) % 2).astype(float)
    assert nyquist_energy(smooth) < 1e-3 * nyquist_energy(smooth + 0.1 * checker)
    # the (pi, pi) frequency sits on both the Nyquist row and column: 2 * (0.1 * 0.5) ** 2 per pixel
    assert nyquist_energy(0.1 * checker) == pytest.approx(2 * 0.05**2)


def test_summary_averages_slices_within_a_patient_then_patients():
    rows = [{'model': m, 'key': f'{p}_00_s{i:03d}', 'patient': patient_of(f'{p}_00_s{i:03d}'), 'mr_psnr': v,
             'mr_ssim': v / 100, 'nyquist': n, 'nyquist_hr': 4.0} for m, p, i, v, n in (
                 ('bicubic', 'case0001', 0, 20.0, 1.0), ('bicubic', 'case0001', 1, 22.0, 1.0),
                 ('bicubic', 'case0002', 0, 30.0, 2.0),
                 ('net', 'case0001', 0, 21.0, 2.0), ('net', 'case0001', 1, 25.0, 2.0),
                 ('net', 'case0002', 0, 31.0, 1.0))]
    summary = summarise(rows)
    assert summary['net']['case0001'] == pytest.approx({'mr_psnr': 23.0, 'mr_ssim': 0.23, 'slices': 2,
                                                        'nyquist_vs_bicubic': 2.0, 'hr_nyquist_vs_bicubic': 4.0})
    assert summary['net']['mean']['mr_psnr'] == 27.0  # (23 + 31) / 2: each patient counts once
    assert summary['bicubic']['mean']['mr_psnr'] == 25.5
    table = format_table(summary, 'net')
    assert '| case0001 | 2 | 21.000 | 23.000 | +2.000 |' in table and '| mean | 3 | 25.500 | 27.000 | +1.500 |' in table


def test_bicubic_against_itself_on_the_prostate_test_patient(prostate3t_prepared):
    slices = load_split(str(prostate3t_prepared), 'test', 2)
    assert len(slices) == 19 and {patient_of(k) for k, _, _ in slices} == {'case0004'}
    assert slices[0][1].shape == (192, 192) and slices[0][2].shape == (384, 384)
    bicubic = Upscaler(Bicubic(num_in_ch=1, upscale=2), torch.device('cpu'))
    rows, outputs = evaluate({'bicubic': bicubic, 'again': bicubic}, slices[:3], 2)
    summary = summarise(rows)
    assert summary['again']['case0004'] == summary['bicubic']['case0004']
    assert summary['again']['case0004']['nyquist_vs_bicubic'] == 1.0
    assert 20 < summary['bicubic']['mean']['mr_psnr'] < 40


def test_missing_split_is_one_line(tmp_path):
    options = f'{REPO}/options/demo_mrdab_x2.yml'
    weights = tmp_path / 'w.pth'
    with open(options) as f:
        network_g = yaml.safe_load(f)['network_g']
    torch.save({'params': build_network(network_g).state_dict()}, weights)
    proc = run_python(['scripts/evaluate.py', '-opt', options, '-w', str(weights), '--data', str(tmp_path / 'none')],
                      cwd=REPO)
    assert proc.returncode == 2 and 'Traceback' not in proc.stdout
    assert f'{tmp_path / "none"}/test/HR.lmdb not found' in proc.stdout


def test_shipped_demo_generator_beats_bicubic_on_the_test_patient(prostate3t_prepared, tmp_path):
    """The generator `make demo` trained (seed 0), loaded by name from the weights manifest with its checksum, on the
    patient it never saw: ahead of bicubic in MR PSNR and MR SSIM, and no checkerboard: less energy at the Nyquist
    frequency than HR has (bicubic smooths that away; a pixel-shuffle checkerboard has orders of magnitude more)."""
    proc = run_python(['scripts/evaluate.py', '-w', 'mrdab_x2_prostate3t_demo', '--data', str(prostate3t_prepared),
                       '--json', str(tmp_path / 'test.json')], cwd=REPO)
    assert proc.returncode == 0, proc.stdout
    with open(tmp_path / 'test.json') as f:
        summary = json.load(f)['summary']
    ours, bicubic = summary['model']['case0004'], summary['bicubic']['case0004']
    assert ours['mr_psnr'] > bicubic['mr_psnr'] + 1.0 and ours['mr_ssim'] > bicubic['mr_ssim'] + 0.02
    assert 1.0 < ours['nyquist_vs_bicubic'] < 0.5 * ours['hr_nyquist_vs_bicubic']
