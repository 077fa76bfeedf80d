"""The piq metrics and NRMSE / HFEN (mrsr_plugin.metrics.piq_metric): perfect scores, closed forms, piq's own
functions on the same tensors, single-channel handling, LPIPS / DISTS without weights, with the converted weights
(mrsr-fetch-vgg) on real MR, and against the lpips and DISTS_pytorch packages' own code."""
import io
import types

import numpy as np
import piq
import pytest
import torch
import torchvision
from basicsr.utils.registry import METRIC_REGISTRY
from conftest import prostate_t2_slice
from scipy import ndimage
from skimage.metrics import normalized_root_mse

from mrsr_plugin.apps.evaluation import usable_metrics
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


def test_lpips_and_dists_without_weights_say_which_file_to_make(tmp_path, monkeypatch):
    monkeypatch.setenv('MRSR_WEIGHTS', str(tmp_path))
    img = np.zeros((64, 64))
    for metric, own in ((calculate_mr_lpips, 'lpips_vgg16_linear'), (calculate_mr_dists, 'dists_vgg16_alpha_beta')):
        with pytest.raises(WeightsMissingError) as err:
            metric(img, img)
        message = str(err.value)
        assert '\n' not in message and 'run mrsr-fetch-vgg' in message
        assert str(tmp_path / own) in message and str(tmp_path / 'vgg16_imagenet_features') in message
    usable, skipped = usable_metrics(['mr_psnr', 'lpips', 'dists'])
    assert usable == ['mr_psnr'] and len(skipped) == 2 and skipped[0].endswith('lpips left out')


@pytest.mark.parametrize('metric', [calculate_mr_lpips, calculate_mr_dists])
def test_lpips_and_dists_are_zero_for_the_slice_and_rise_with_blur_and_noise(vgg_weights, monkeypatch, metric):
    """On the real T2 slice (its central 192x192): 0 against itself, and larger for every step of Gaussian blur
    (sigma 0.5, 1, 2 pixels) and of Gaussian noise (standard deviation 0.01, 0.03, 0.1 of the [0, 1] range)."""
    monkeypatch.setenv('MRSR_WEIGHTS', vgg_weights)
    gt = np.array(prostate_t2_slice()[96:288, 96:288])
    assert metric(gt, gt, crop_border=2) == pytest.approx(0, abs=1e-6)
    assert METRIC_REGISTRY.get(metric.__name__) is metric and metric.higher_is_better is False
    blurred = [metric(ndimage.gaussian_filter(gt, sigma), gt, crop_border=2) for sigma in (0.5, 1, 2)]
    rng = np.random.default_rng(0)
    noisy = [metric(np.clip(gt + rng.normal(0, std, gt.shape), 0, 1), gt, crop_border=2) for std in (0.01, 0.03, 0.1)]
    for values in (blurred, noisy):
        assert 0.001 < values[0] < values[1] < values[2] < 1, values


def test_lpips_and_dists_equal_the_reference_implementations(vgg_weights, vgg_sources, lpips_wheel, monkeypatch,
                                                            tmp_path):
    """The lpips 0.1.4 package's LPIPS and DISTS_pytorch 0.1's DISTS (their own code, from their wheels; the VGG16
    trunk given the converted features, which both would take from torchvision) on the real slice and a blurred,
    noisy copy: the plugin's piq-based metrics give the same values."""
    from mrsr_plugin.apps.fetch_vgg import read_member
    from mrsr_plugin.pretrained_vgg import vgg16_features
    monkeypatch.setenv('MRSR_WEIGHTS', vgg_weights)
    (dists_wheel, ) = (p for p in vgg_sources.values() if p.endswith('.whl'))
    for wheel in (lpips_wheel, dists_wheel):
        monkeypatch.syspath_prepend(wheel)  # pure-Python wheels import as zip files
    features = vgg16_features(vgg_weights)
    monkeypatch.setattr(torchvision.models, 'vgg16', lambda *args, **kwargs: types.SimpleNamespace(features=features))
    import lpips
    from DISTS_pytorch import DISTS
    linear = tmp_path / 'vgg.pth'
    linear.write_bytes(read_member(lpips_wheel, 'lpips/weights/v0.1/vgg.pth'))
    reference_lpips = lpips.LPIPS(net='vgg', model_path=str(linear), verbose=False)
    reference_dists = DISTS(load_weights=False)
    weights = torch.load(io.BytesIO(read_member(dists_wheel, 'DISTS_pytorch/weights.pt')), map_location='cpu',
                         weights_only=True)
    reference_dists.alpha.data, reference_dists.beta.data = weights['alpha'], weights['beta']

    gt = np.array(prostate_t2_slice()[64:320, 64:320])  # 256x256: DISTS as piq does without resizing
    sr = np.clip(ndimage.gaussian_filter(gt, 1.0) + np.random.default_rng(0).normal(0, 0.02, gt.shape), 0, 1)
    x, y = (torch.from_numpy(v.astype(np.float32))[None, None].repeat(1, 3, 1, 1) for v in (sr, gt))
    with torch.no_grad():
        expected_lpips = float(reference_lpips(x, y, normalize=True))
        expected_dists = float(reference_dists(x, y))
    assert calculate_mr_lpips(sr, gt) == pytest.approx(expected_lpips, rel=1e-4)
    assert calculate_mr_dists(sr, gt) == pytest.approx(expected_dists, rel=1e-4)
