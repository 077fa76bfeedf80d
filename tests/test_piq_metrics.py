"""The piq metrics and NRMSE / HFEN (mrsr_plugin.metrics.piq_metric): perfect scores, closed forms, piq's own
functions on the same tensors, single-channel handling, LPIPS / DISTS without weights."""
import numpy as np
import piq
import pytest
import torch
from basicsr.utils.registry import METRIC_REGISTRY
from conftest import prostate_t2_slice
from scipy import ndimage
from skimage.metrics import normalized_root_mse

from mrsr_plugin.apps.evaluation import usable_metrics
from mrsr_plugin.metrics import piq_metric
from mrsr_plugin.metrics.piq_metric import (WeightsMissingError, calculate_mr_dists, calculate_mr_gmsd,
                                            calculate_mr_haarpsi, calculate_mr_hfen, calculate_mr_lpips,
                                            calculate_mr_ms_ssim, calculate_mr_nrmse, calculate_mr_vsi)

PIQ = {calculate_mr_ms_ssim: piq.multi_scale_ssim, calculate_mr_haarpsi: piq.haarpsi, calculate_mr_vsi: piq.vsi,
       calculate_mr_gmsd: piq.gmsd}


@pytest.fixture(scope='module')
def pair():
    """The real T2 slice cropped to 192x192 (GT) and a blurred, noisy version of it (SR), float64 in [0, 1]."""
    gt = np.array(prostate_t2_slice()[96:288, 96:288])
    sr = np.clip(ndimage.gaussian_filter(gt, 0.8) + np.random.default_rng(0).normal(0, 0.01, gt.shape), 0, 1)
    return sr, gt


@pytest.mark.parametrize('metric, perfect', [(calculate_mr_ms_ssim, 1), (calculate_mr_haarpsi, 1),
                                             (calculate_mr_vsi, 1), (calculate_mr_gmsd, 0), (calculate_mr_nrmse, 0),
                                             (calculate_mr_hfen, 0)])
def test_identical_images_score_perfectly_and_registered(pair, metric, perfect):
    _, gt = pair
    assert metric(gt, gt, crop_border=2) == pytest.approx(perfect, abs=1e-5)  # piq runs in float32
    assert METRIC_REGISTRY.get(metric.__name__) is metric and metric.float_input is True
    assert metric.higher_is_better is bool(perfect)


@pytest.mark.parametrize('metric', list(PIQ))
def test_wrappers_are_piqs_function_on_the_cropped_grey_slice(pair, metric):
    sr, gt = pair
    x, y = (torch.from_numpy(a[3:-3, 3:-3].astype(np.float32))[None, None] for a in (sr, gt))
    with pytest.warns(UserWarning) if metric is calculate_mr_vsi else np.errstate():  # piq repeats grey itself
        expected = float(PIQ[metric](x, y, data_range=1.0))
    assert metric(sr, gt, crop_border=3) == pytest.approx(expected, abs=1e-6)
    # 3 equal channels are the grey slice; the data range scales with the data
    assert metric(np.repeat(sr[..., None], 3, 2), np.repeat(gt[..., None], 3, 2), crop_border=3) == pytest.approx(
        expected, abs=1e-5)
    assert metric(sr * 4, gt * 4, crop_border=3, data_range=4.0) == pytest.approx(expected, abs=1e-5)


def test_nrmse_and_hfen_closed_forms(pair):
    _, gt = pair
    # a gain of 1.1: both are relative errors of 0.1 (the Laplacian of Gaussian is linear)
    assert calculate_mr_nrmse(1.1 * gt, gt) == pytest.approx(0.1, abs=1e-12)
    assert calculate_mr_hfen(1.1 * gt, gt) == pytest.approx(0.1, abs=1e-12)
    # an offset of 0.05: NRMSE = 0.05 / rms(gt); HFEN sees no high frequency (the truncated 15x15 LoG kernel sums
    # to almost, not exactly, zero)
    assert calculate_mr_nrmse(gt + 0.05, gt) == pytest.approx(0.05 / np.sqrt(np.mean(gt**2)), rel=1e-12)
    assert calculate_mr_hfen(gt + 0.05, gt) < 1e-4
    sr, _ = pair
    assert calculate_mr_nrmse(sr, gt, crop_border=2) == pytest.approx(
        normalized_root_mse(gt[2:-2, 2:-2], sr[2:-2, 2:-2]), rel=1e-12)
    log = [ndimage.gaussian_laplace(a[2:-2, 2:-2], 1.5, truncate=7 / 1.5) for a in (sr, gt)]
    assert calculate_mr_hfen(sr, gt, crop_border=2) == pytest.approx(
        np.linalg.norm(log[0] - log[1]) / np.linalg.norm(log[1]), rel=1e-12)


def test_masked_nrmse_counts_the_foreground_only():
    gt = np.zeros((32, 32))
    gt[:, :16] = 0.5
    sr = gt + np.where(gt > 0, 0.05, 0.3)  # small error on tissue, large in the air
    assert calculate_mr_nrmse(sr, gt, foreground_threshold=0.05) == pytest.approx(0.1, abs=1e-12)
    assert calculate_mr_nrmse(sr, gt) > 0.5


def test_ms_ssim_needs_five_scales():
    with pytest.raises(ValueError, match='161x161'):
        calculate_mr_ms_ssim(np.zeros((164, 164)), np.zeros((164, 164)), crop_border=2)


def test_lpips_and_dists_without_weights_say_which_file_goes_where(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    piq_metric._perceptual_network.cache_clear()
    img = np.zeros((64, 64))
    for metric, own in ((calculate_mr_lpips, 'lpips_weights.pt'), (calculate_mr_dists, 'dists_weights.pt')):
        with pytest.raises(WeightsMissingError) as err:
            metric(img, img)
        message = str(err.value)
        assert '\n' not in message and own in message and 'vgg16-397923af.pth' in message
        assert str(tmp_path / 'hub' / 'checkpoints') in message
    usable, skipped = usable_metrics(['mr_psnr', 'lpips', 'dists'])
    assert usable == ['mr_psnr'] and len(skipped) == 2 and skipped[0].endswith('lpips left out')
    piq_metric._perceptual_network.cache_clear()
