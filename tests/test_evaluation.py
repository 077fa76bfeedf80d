"""Per-patient evaluation against bicubic (mrsr_plugin.apps.evaluation, scripts/evaluate.py)."""
import json

import numpy as np
import pytest
import torch
import yaml
from basicsr.archs import build_network
from conftest import REPO, run_python

from mrsr_plugin.archs.bicubic_arch import Bicubic
from mrsr_plugin.apps.evaluation import (DEFAULT_METRICS, ONE_PATIENT, bootstrap_weights, evaluate, format_statistics,
                                         format_table, higher_is_better, load_split, load_splits, nyquist_energy,
                                         patient_of, score_slices, statistics, summarise, usable_metrics)
from mrsr_plugin.apps.infer.core import Upscaler


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


def _rows(values, model='bicubic'):
    """{patient: [slice values]} -> score rows of one model with one metric, mr_psnr."""
    return [{'model': model, 'key': f'{p}_00_s{i:03d}', 'patient': p, 'mr_psnr': float(v)}
            for p, slice_values in values.items() for i, v in enumerate(slice_values)]


def test_bootstrap_weights_resample_patients_then_slices():
    patients = ['a'] * 3 + ['b'] * 5
    weights = bootstrap_weights(patients, resamples=500, seed=1)
    assert weights.shape == (500, 8) and np.allclose(weights.sum(axis=1), 1)
    # each drawn patient carries 1/2 of the weight, in picks of 1/(2 n_p): a's share is 0, 1/2 or 1
    assert set(np.round(weights[:, :3].sum(axis=1), 12)) == {0.0, 0.5, 1.0}
    for picks in (weights[:, :3] * 6, weights[:, 3:] * 10):  # whole numbers of picks
        assert np.allclose(picks, np.round(picks))
    assert np.array_equal(weights, bootstrap_weights(patients, resamples=500, seed=1))


def test_interval_on_known_data():
    # constant data: a zero-width interval; a model against itself: a difference of exactly 0
    constant = _rows({'case0001': [30.0] * 4, 'case0002': [30.0] * 3})
    stats = statistics(constant + [dict(r, model='again') for r in constant], resamples=200)
    assert stats['models']['bicubic']['mr_psnr'] == {'low': 30.0, 'high': 30.0, 'mean': 30.0}
    assert {k: stats['models']['again']['mr_psnr'][k] for k in ('diff', 'diff_low', 'diff_high')} == {
        'diff': 0.0, 'diff_low': 0.0, 'diff_high': 0.0}
    assert stats['patients'] == 2 and stats['note'] is None
    # two levels: patients at 20 and 30 dB with no slice-to-slice spread; only resampling patients gives an
    # interval, and its resamples are 20, 25 or 30 (p = 1/4, 1/2, 1/4), so the 95 % interval is [20, 30]
    two = statistics(_rows({'case0001': [20.0] * 5, 'case0002': [30.0] * 2}), resamples=2000)
    assert two['models']['bicubic']['mr_psnr'] == {'low': 20.0, 'high': 30.0, 'mean': 25.0}
    # the difference is paired: a model 1 dB above bicubic on every slice is +1 [+1, +1], however wide each is
    rows = _rows({'case0001': [20.0, 22.0, 21.0], 'case0002': [30.0, 34.0]})
    stats = statistics(rows + [dict(r, model='net', mr_psnr=r['mr_psnr'] + 1) for r in rows], resamples=300)
    net = stats['models']['net']['mr_psnr']
    assert net['high'] - net['low'] > 5
    assert [net[k] for k in ('diff', 'diff_low', 'diff_high')] == pytest.approx([1, 1, 1], abs=1e-12)
    assert '| mr_psnr ↑ | 26.500 [' in format_statistics(stats) and '| +1.0000 [+1.0000, +1.0000] |' in \
        format_statistics(stats)


def test_one_patient_is_said_and_the_interval_reflects_slices():
    stats = statistics(_rows({'case0001': [20.0, 30.0]}), resamples=2000)
    assert stats['note'] == ONE_PATIENT and stats['patients'] == 1
    # the slice level alone: resamples 20, 25, 30 with p = 1/4, 1/2, 1/4
    assert stats['models']['bicubic']['mr_psnr'] == {'low': 20.0, 'high': 30.0, 'mean': 25.0}


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


def test_lpips_and_dists_columns_with_intervals(prostate3t_prepared, vgg_weights, monkeypatch):
    """With mrsr-fetch-vgg's weights, LPIPS and DISTS are default columns like the others: per slice, mean over
    patients with a bootstrap interval, difference to bicubic; HR itself scores 0 and beats bicubic."""
    monkeypatch.setenv('MRSR_WEIGHTS', vgg_weights)
    assert usable_metrics(DEFAULT_METRICS) == (list(DEFAULT_METRICS), [])
    slices = [(k, lr[24:72, 24:72], hr[96:288, 96:288]) for k, lr, hr in load_split(str(prostate3t_prepared), 'test',
                                                                                   4)[8:10]]  # central 192x192
    bicubic = np.concatenate(list(Upscaler(Bicubic(num_in_ch=1, upscale=4), torch.device('cpu')).batches(
        np.stack([lr for _, lr, _ in slices]), quiet=True)))
    rows = []
    for name, srs in (('bicubic', bicubic), ('hr', [hr for _, _, hr in slices])):
        rows += score_slices(name, srs, slices, 4, metrics=['lpips', 'dists'])
    stats = statistics(rows, resamples=200)
    for metric in ('lpips', 'dists'):
        ours, theirs = stats['models']['hr'][metric], stats['models']['bicubic'][metric]
        assert ours['mean'] == pytest.approx(0, abs=1e-6) and 0 < theirs['low'] <= theirs['mean'] <= theirs['high']
        assert ours['diff_low'] <= ours['diff'] <= ours['diff_high'] < 0
    assert '| lpips ↓ |' in format_statistics(stats) and '| dists ↓ |' in format_statistics(stats)


def test_pooled_splits(prostate3t_prepared):
    pooled = load_splits(str(prostate3t_prepared), ['val', 'test'], 4)
    assert len(pooled) == 38 and {patient_of(k) for k, _, _ in pooled} == {'case0003', 'case0004'}
    assert pooled[0][2].shape == (384, 384) and pooled[0][1].shape == (96, 96)


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
    # without LPIPS / DISTS, whatever mrsr-fetch-vgg put in the user's cache: on 19 slices at 384x384 they take
    # minutes on a busy CPU (test_lpips_and_dists_columns_with_intervals covers them)
    proc = run_python(['scripts/evaluate.py', '-w', 'mrdab_x2_prostate3t_demo', '--data', str(prostate3t_prepared),
                       '--json', str(tmp_path / 'test.json')], cwd=REPO, env={'MRSR_WEIGHTS': str(tmp_path)})
    assert proc.returncode == 0, proc.stdout
    with open(tmp_path / 'test.json') as f:
        result = json.load(f)
    summary = result['summary']
    ours, bicubic = summary['model']['case0004'], summary['bicubic']['case0004']
    assert ours['mr_psnr'] > bicubic['mr_psnr'] + 1.0 and ours['mr_ssim'] > bicubic['mr_ssim'] + 0.02
    assert 1.0 < ours['nyquist_vs_bicubic'] < 0.5 * ours['hr_nyquist_vs_bicubic']
    # every default metric ahead of bicubic with an interval that excludes 0; one patient is said
    stats = result['statistics']
    assert stats['note'] == ONE_PATIENT and f'note: {ONE_PATIENT}' in proc.stdout
    for metric, entry in stats['models']['model'].items():
        better = entry['diff_low'] > 0 if higher_is_better(metric) else entry['diff_high'] < 0
        assert better and entry['low'] <= entry['mean'] <= entry['high'], metric


@pytest.mark.parametrize('scale', [2, 4])
def test_released_generators_beat_bicubic_on_the_test_patient(prostate3t_prepared, scale):
    """The released PSNR and GAN generators of a scale (weights.yml, options/release), by name with their checksums,
    on five slices of the patient they never saw: both ahead of bicubic in MR PSNR and MR SSIM, the PSNR one ahead of
    the GAN one in MR PSNR (docs/weights.md, measured on all 19 slices with LPIPS and DISTS)."""
    from mrsr_plugin.apps.infer.core import load_generator
    slices = load_splits(str(prostate3t_prepared), ['test'], scale)[5:10]
    upscalers = {'bicubic': Upscaler(Bicubic(num_in_ch=1, upscale=scale), torch.device('cpu'))}
    for kind in ('psnr', 'gan'):
        upscalers[kind], _ = load_generator(f'mrdab_{kind}_x{scale}_prostate3t', device=torch.device('cpu'))
        assert upscalers[kind].scale == scale
    rows, _ = evaluate(upscalers, slices, scale, ['mr_psnr', 'mr_ssim'])
    mean = {(m, k): np.mean([r[k] for r in rows if r['model'] == m]) for m in upscalers for k in ('mr_psnr', 'mr_ssim')}
    for kind in ('psnr', 'gan'):
        assert mean[kind, 'mr_psnr'] > mean['bicubic', 'mr_psnr'] + 0.5, mean
        assert mean[kind, 'mr_ssim'] > mean['bicubic', 'mr_ssim'] + 0.02, mean
    assert mean['psnr', 'mr_psnr'] > mean['gan', 'mr_psnr'], mean
