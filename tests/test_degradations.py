"""Degradations: each test checks a known property of down-sampling, blur, noise, motion or the pipeline."""
import hashlib
import json
import os

import numpy as np
import pytest
import torch
import yaml
from conftest import prostate_t2_slice, run_python

from mrsr_plugin.archs.bicubic_arch import Bicubic
from mrsr_plugin.data.degradations import (DegradationConfig, bicubic_downsample, degrade, gaussian_blur,
                                           kspace_truncate, motion_artifact, rician_noise, rng_for, sample_motion,
                                           shift_kspace_lines)

# (H, W, scale): even HR with even and odd LR sides, odd HR
KSPACE_CASES = [(64, 48, 2), (64, 48, 4), (60, 60, 3), (60, 60, 4), (45, 63, 3)]
EVEN_CASES = [case for case in KSPACE_CASES if case[0] % 2 == 0 and case[1] % 2 == 0]


def smooth_image(shape, seed=0):
    """Random image in about [0.2, 0.8], (H, W) float64, with some structure."""
    rng = np.random.default_rng(seed)
    img = gaussian_blur(rng.random(shape), 2.0).astype(np.float64)
    return 0.2 + 0.6 * (img - img.min()) / (img.max() - img.min())


def band_split(shape, scale, seed=0):
    """Real images (low, high), (H, W): low has only frequencies strictly inside the block kept by kspace_truncate
    (no -M/2 coefficient) and lies in [0.4, 0.6]; high has only frequencies outside it."""
    rng = np.random.default_rng(seed)
    freq_y, freq_x = (np.abs(np.fft.fftfreq(n)) * n for n in shape)  # |k| in cycles per image
    inside = (freq_y[:, None] < shape[0] // scale / 2) & (freq_x[None, :] < shape[1] // scale / 2)
    outside = (freq_y[:, None] > shape[0] // scale / 2) | (freq_x[None, :] > shape[1] // scale / 2)
    spectrum = np.fft.fft2(rng.standard_normal(shape))
    low, high = (np.fft.ifft2(spectrum * mask).real for mask in (inside, outside))
    return 0.5 + 0.1 * low / np.abs(low).max(), 0.2 * high / np.abs(high).max()


def lr_sha256(hr, scale, config, seed, key):
    return hashlib.sha256(degrade(hr, scale, config, rng_for(seed, key, scale)).tobytes()).hexdigest()


def block_centre_values(img, scale):
    """A band-limited (H, W) image (no -N/2 coefficients) at the HR block centres, (H / scale, W / scale)."""
    offset = (scale - 1) / 2
    return shift_kspace_lines(img, slice(None), (-offset, -offset)).real[::scale, ::scale]


def bicubic_upsample(lr, scale):
    """The Bicubic row of Table 3: F.interpolate(mode='bicubic', align_corners=False), not clamped; (h, w) float64
    -> (scale * h, scale * w)."""
    with torch.no_grad():
        up = Bicubic(num_in_ch=1, upscale=scale, clamp=False)(torch.from_numpy(np.asarray(lr, np.float64))[None, None])
    return up[0, 0].numpy()


def correlation_peak(moved, fixed, radius=3, border=16):
    """Sub-pixel (dy, dx) at which ``moved`` best matches ``fixed`` (moved[y + dy, x + dx] ~ fixed[y, x]): the peak
    of the normalised cross-correlation over integer shifts up to ``radius``, refined per axis by a parabola through
    the peak and its two neighbours. ``border`` pixels on each side are left out."""
    fixed = fixed[border:-border, border:-border] - fixed[border:-border, border:-border].mean()
    h, w = fixed.shape
    corr = np.empty((2 * radius + 1, 2 * radius + 1))
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            window = moved[border + dy:border + dy + h, border + dx:border + dx + w]
            window = window - window.mean()
            corr[dy + radius, dx + radius] = (window * fixed).sum() / np.sqrt((window**2).sum() * (fixed**2).sum())
    iy, ix = np.unravel_index(corr.argmax(), corr.shape)
    assert 0 < iy < 2 * radius and 0 < ix < 2 * radius, 'correlation peak on the search border'

    def vertex(before, at, after):
        return (before - after) / (2 * (before - 2 * at + after))

    return (iy - radius + vertex(*corr[iy - 1:iy + 2, ix]), ix - radius + vertex(*corr[iy, ix - 1:ix + 2]))


def psnr(img, ref, border):
    img, ref = (a[border:-border, border:-border] for a in (np.clip(img, 0, 1), ref))
    return 10 * np.log10(1 / np.mean((img - ref)**2))


# bicubic_downsample


@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('shape', [(48, 36), (12, 24), (384, 336)])
def test_bicubic_equals_basicsr_imresize(scale, shape):
    """To float32 rounding: BasicSR's runs in float32 torch, ours in float64 NumPy (no torch in lmdb_prepare)."""
    from basicsr.utils.matlab_functions import imresize
    hr = smooth_image(shape)
    lr = bicubic_downsample(hr, scale)
    assert lr.shape == (shape[0] // scale, shape[1] // scale) and lr.dtype == np.float32
    np.testing.assert_allclose(lr, imresize(hr.astype(np.float32), 1 / scale), rtol=0, atol=3e-7)


def test_bicubic_keeps_constant():
    np.testing.assert_allclose(bicubic_downsample(np.full((48, 36), 0.37), 3), 0.37, atol=1e-6)


# kspace_truncate


@pytest.mark.parametrize('h, w, scale', KSPACE_CASES)
def test_kspace_keeps_constant(h, w, scale):
    lr = kspace_truncate(np.full((h, w), 0.6), scale)
    assert lr.shape == (h // scale, w // scale) and lr.dtype == np.float32
    np.testing.assert_allclose(lr, 0.6, atol=1e-6)


@pytest.mark.parametrize('h, w, scale', KSPACE_CASES)
def test_kspace_samples_band_limited_image_at_block_centres(h, w, scale):
    """The LR of a sum of in-band cosines is the same cosines sampled at the centres of the scale x scale blocks,
    HR pixels (scale * i + (scale - 1) / 2, scale * j + (scale - 1) / 2), where bicubic_downsample puts them."""
    lr_h, lr_w = h // scale, w // scale

    def cosines(y, x):
        return (0.5 + 0.2 * np.cos(2 * np.pi * (lr_h // 3) * y / h + 0.3)
                + 0.1 * np.cos(2 * np.pi * (lr_w // 3) * x / w - 1.0)
                + 0.1 * np.cos(2 * np.pi * (2 * y / h - 3 * x / w) + 2.0))

    hr = cosines(*np.mgrid[:h, :w])
    lr = kspace_truncate(hr, scale)
    np.testing.assert_allclose(lr, cosines(*np.mgrid[:lr_h, :lr_w] * scale + (scale - 1) / 2), atol=1e-6)
    assert np.abs(lr - cosines(*np.mgrid[:lr_h, :lr_w] * scale)).max() > 0.05  # not at the block's first pixel


@pytest.mark.parametrize('h, w, scale', KSPACE_CASES)
def test_kspace_keeps_central_block_and_removes_the_rest(h, w, scale):
    low, high = band_split((h, w), scale)
    lr = kspace_truncate(low + high, scale)
    lr_h, lr_w = h // scale, w // scale
    top, left = h // 2 - lr_h // 2, w // 2 - lr_w // 2
    hr_block = np.fft.fftshift(np.fft.fft2(low + high))[top:top + lr_h, left:left + lr_w]
    # the block's magnitudes; its phases carry the ramp that moves the samples to the block centres
    np.testing.assert_allclose(np.abs(np.fft.fftshift(np.fft.fft2(lr))) * scale**2, np.abs(hr_block),
                               atol=1e-5 * h * w)
    np.testing.assert_allclose(lr, block_centre_values(low, scale), atol=1e-6)
    assert np.abs(high).max() > 0.1


@pytest.mark.parametrize('h, w, scale', EVEN_CASES)
def test_kspace_removes_nyquist_checkerboard(h, w, scale):
    y, x = np.mgrid[:h, :w]
    hr = 0.5 + 0.3 * (-1.0)**(y + x) + 0.1 * np.cos(np.pi * y * (h - 4) / h)
    np.testing.assert_allclose(kspace_truncate(hr, scale), 0.5, atol=1e-6)


# the grid convention of every down-sampler


@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('downsample', [bicubic_downsample, kspace_truncate])
def test_bicubic_upsampled_lr_is_aligned_with_hr(downsample, scale):
    """On a real prostate T2 slice, the LR of every down-sampler, upsampled by bicubic interpolation with
    align_corners=False, matches the HR best at zero shift: LR pixels lie at the HR block centres."""
    hr = prostate_t2_slice()
    np.testing.assert_allclose(correlation_peak(bicubic_upsample(downsample(hr, scale), scale), hr), (0, 0),
                               atol=0.25)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_kspace_lr_upsamples_as_well_as_bicubic_lr(scale):
    """Table 3's Bicubic row is not penalised on k-space LR: it scores within 1 dB of bicubic LR (a grid offset of
    (scale - 1) / 2 HR pixels costs about 2.5 dB on this slice)."""
    hr = prostate_t2_slice()
    scores = [psnr(bicubic_upsample(downsample(hr, scale), scale), hr, border=8)
              for downsample in (bicubic_downsample, kspace_truncate)]
    assert scores[1] > scores[0] - 1, scores


@pytest.mark.parametrize('downsample', [bicubic_downsample, kspace_truncate])
def test_downsample_rejects_indivisible_shape(downsample):
    with pytest.raises(ValueError, match=r'\(50, 48\).*scale 3'):
        downsample(np.zeros((50, 48)), 3)
    with pytest.raises(ValueError, match='shape'):
        downsample(np.zeros((48, 48, 3)), 2)


# gaussian_blur


def test_blur_sigma_zero_is_identity():
    img = smooth_image((32, 40))
    np.testing.assert_array_equal(gaussian_blur(img, 0), img.astype(np.float32))


def test_blur_preserves_mean():
    img = np.random.default_rng(1).random((64, 48))
    blurred = gaussian_blur(img, 1.5)
    assert blurred.shape == img.shape and blurred.dtype == np.float32
    assert abs(blurred.mean() - img.mean()) < 1e-6


def test_blur_impulse_response_has_variance_sigma_squared():
    impulse = np.zeros((41, 41))
    impulse[20, 20] = 1
    response = gaussian_blur(impulse, 2.0)
    offsets = np.arange(41) - 20
    assert response.sum() == pytest.approx(1, abs=1e-6)
    assert (response.sum(axis=1) * offsets**2).sum() == pytest.approx(4.0, rel=1e-3)
    np.testing.assert_allclose(response, response.T, atol=1e-7)


def test_blur_reduces_white_noise_variance():
    """For a Gaussian of sigma pixels the variance of white noise shrinks by 1 / (4 pi sigma^2)."""
    noise = np.random.default_rng(2).standard_normal((256, 256))
    assert gaussian_blur(noise, 2.0).var() / noise.var() == pytest.approx(1 / (16 * np.pi), rel=0.1)


# rician_noise


def test_rician_noise_on_zero_is_rayleigh():
    sigma = 0.05
    noisy = rician_noise(np.zeros((256, 256)), sigma, np.random.default_rng(3))
    assert noisy.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.02)
    assert noisy.std() == pytest.approx(sigma * np.sqrt(2 - np.pi / 2), rel=0.03)
    assert noisy.min() >= 0


def test_rician_noise_on_high_signal_is_nearly_gaussian():
    signal, sigma = 0.5, 0.05
    noisy = rician_noise(np.full((256, 256), signal), sigma, np.random.default_rng(4))
    assert noisy.mean() == pytest.approx(np.sqrt(signal**2 + sigma**2), rel=1e-3)  # signal alone is 5e-3 off
    assert noisy.std() == pytest.approx(sigma, rel=0.03)


def test_rician_noise_sigma_zero_is_identity_and_seeded():
    img = smooth_image((32, 32))
    np.testing.assert_array_equal(rician_noise(img, 0, np.random.default_rng(0)), img.astype(np.float32))
    first, again, other = (rician_noise(img, 0.05, np.random.default_rng(seed)) for seed in (5, 5, 6))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    with pytest.raises(ValueError, match='sigma'):
        rician_noise(img, -0.1, np.random.default_rng(0))


# motion


@pytest.mark.parametrize('max_shift, fraction', [(2.0, 0.0), (0.0, 0.5), (3.0, 0.01)])
def test_motion_without_lines_or_shift_is_identity(max_shift, fraction):
    img = smooth_image((40, 36))  # round(0.01 * 40) = 0 lines
    np.testing.assert_array_equal(motion_artifact(img, np.random.default_rng(0), max_shift, fraction),
                                  img.astype(np.float32))


@pytest.mark.parametrize('shape', [(32, 24), (31, 27)])
def test_shifting_all_lines_by_whole_pixels_is_np_roll(shape):
    img = smooth_image(shape)
    moved = shift_kspace_lines(img, slice(None), (2.0, -3.0))
    np.testing.assert_allclose(moved, np.roll(img, (2, -3), axis=(0, 1)), atol=1e-12)


@pytest.mark.parametrize('shape', [(32, 24), (31, 27)])
def test_shifting_lines_changes_phase_of_those_lines_only(shape):
    img = smooth_image(shape)
    lines = slice(10, 20)
    before = np.fft.fftshift(np.fft.fft2(img))
    after = np.fft.fftshift(np.fft.fft2(shift_kspace_lines(img, lines, (0.7, -1.3))))
    np.testing.assert_allclose(np.abs(after), np.abs(before), rtol=1e-9, atol=1e-9)
    untouched = np.ones(shape[0], bool)
    untouched[lines] = False
    np.testing.assert_allclose(after[untouched], before[untouched], atol=1e-9)
    assert np.abs(after[lines] - before[lines]).max() > 1


def test_sample_motion_draws_contiguous_blocks_anywhere_including_the_centre():
    height, max_shift, fraction = 40, 1.5, 0.3
    covers_centre = set()
    for seed in range(200):
        lines, (dy, dx) = sample_motion(height, np.random.default_rng(seed), max_shift, fraction)
        assert 0 <= lines.start and lines.stop <= height and lines.stop - lines.start == 12
        assert abs(dy) <= max_shift and abs(dx) <= max_shift
        covers_centre.add(lines.start <= height // 2 < lines.stop)
    assert covers_centre == {True, False}


def test_motion_artifact_is_magnitude_of_sampled_event_and_changes_image():
    img = smooth_image((48, 40))
    corrupted = motion_artifact(img, np.random.default_rng(7), 2.0, 0.3)
    lines, shift = sample_motion(48, np.random.default_rng(7), 2.0, 0.3)
    np.testing.assert_allclose(corrupted, np.abs(shift_kspace_lines(img, lines, shift)), atol=1e-7)
    assert corrupted.dtype == np.float32 and np.abs(corrupted - img).max() > 1e-3


# degrade and rng_for

FULL_CONFIG = {'blur_sigma': [0.3, 1.0], 'noise_sigma': [0.01, 0.03], 'motion_prob': 0.5, 'motion_max_shift': 1.5}


@pytest.mark.parametrize('downsample', ['bicubic', 'kspace'])
def test_degrade_makes_every_scale_from_one_hr(downsample):
    hr = smooth_image((96, 96))
    config = dict(FULL_CONFIG, downsample=downsample, motion_prob=1.0)
    for scale in (2, 3, 4):
        lr = degrade(hr, scale, config, rng_for(0, 'slice', scale))
        assert lr.shape == (96 // scale, 96 // scale) and lr.dtype == np.float32
        assert lr.min() >= 0 and lr.max() <= 1


def test_degrade_runs_the_stages_in_order():
    """motion -> blur -> downsample -> noise -> clip, with the rng draws in the documented order."""
    hr = np.clip(smooth_image((48, 48)) * 1.6 - 0.3, 0, 1)  # touches 0 and 1, so noise and clip matter
    config = DegradationConfig.from_dict(dict(FULL_CONFIG, downsample='kspace', motion_prob=1.0))
    rng = np.random.default_rng(8)
    assert rng.random() < 1
    blur_sigma, noise_sigma = rng.uniform(0.3, 1.0), rng.uniform(0.01, 0.03)
    img = gaussian_blur(motion_artifact(hr, rng, 1.5, 0.3), blur_sigma)
    expected = np.clip(rician_noise(kspace_truncate(img, 2), noise_sigma, rng), 0, 1)
    np.testing.assert_array_equal(degrade(hr, 2, config, np.random.default_rng(8)), expected)


def test_degrade_without_degradations_is_plain_downsampling():
    hr = smooth_image((48, 48)).astype(np.float32)  # stages hand float32 to each other
    np.testing.assert_array_equal(degrade(hr, 2, {'clip': False}, rng_for(0, 'a', 2)), bicubic_downsample(hr, 2))
    np.testing.assert_array_equal(degrade(hr, 4, {'downsample': 'kspace'}, rng_for(0, 'a', 4)),
                                  np.clip(kspace_truncate(hr, 4), 0, 1))


def test_degrade_is_deterministic_in_seed_key_and_scale():
    hr = smooth_image((48, 48))
    config = DegradationConfig.from_dict(FULL_CONFIG)
    assert lr_sha256(hr, 2, config, 0, 'case0000_00_s001') == lr_sha256(hr, 2, FULL_CONFIG, 0, 'case0000_00_s001')
    assert lr_sha256(hr, 2, config, 0, 'case0000_00_s001') != lr_sha256(hr, 2, config, 0, 'case0000_00_s002')
    assert lr_sha256(hr, 2, config, 0, 'case0000_00_s001') != lr_sha256(hr, 2, config, 1, 'case0000_00_s001')
    draws = [rng_for(0, 'k', scale).random() for scale in (2, 3, 4, 2)]
    assert len(set(draws[:3])) == 3 and draws[3] == draws[0]


def test_degrade_is_identical_in_another_process():
    """A fresh interpreter with another str-hash salt gives the same LR hashes (the key goes through SHA-256)."""
    code = ('from test_degradations import FULL_CONFIG, lr_sha256, smooth_image; hr = smooth_image((48, 48)); '
            'print(*(lr_sha256(hr, s, dict(FULL_CONFIG, downsample=d), 3, "case0001_00_s042") '
            'for d in ("bicubic", "kspace") for s in (2, 3, 4)))')
    result = run_python(['-c', code], cwd=os.path.dirname(__file__), env={'PYTHONHASHSEED': '12345'}, timeout=120)
    assert result.returncode == 0, result.stdout
    hr = smooth_image((48, 48))
    expected = [lr_sha256(hr, s, dict(FULL_CONFIG, downsample=d), 3, 'case0001_00_s042')
                for d in ('bicubic', 'kspace') for s in (2, 3, 4)]
    assert result.stdout.split() == expected


def test_degrade_rejects_indivisible_hr():
    with pytest.raises(ValueError, match=r'\(50, 48\).*scale 4'):
        degrade(np.zeros((50, 48)), 4, None, rng_for(0, 'a', 4))


@pytest.mark.parametrize('seed, key, scale', [(-1, 'a', 2), (0, b'a', 2), (0, 'a', 0)])
def test_rng_for_rejects_bad_arguments(seed, key, scale):
    with pytest.raises(ValueError):
        rng_for(seed, key, scale)


# DegradationConfig


def test_config_accepts_scalars_and_lists():
    config = DegradationConfig.from_dict({'blur_sigma': 0.5, 'noise_sigma': [0.01, 0.02], 'motion_prob': 1})
    assert config.blur_sigma == (0.5, 0.5) and config.noise_sigma == (0.01, 0.02) and config.motion_prob == 1.0
    assert DegradationConfig.from_dict({'blur_sigma': [0.7]}).blur_sigma == (0.7, 0.7)  # argparse nargs='+'
    assert DegradationConfig.from_dict(None) == DegradationConfig()


@pytest.mark.parametrize('bad, message', [
    ({'blurr_sigma': 1.0}, 'blurr_sigma'),
    ({'downsample': 'nearest'}, "downsample.*'nearest'"),
    ({'noise_sigma': -0.1}, 'noise_sigma.*-0.1'),
    ({'blur_sigma': [2.0, 1.0]}, 'blur_sigma'),
    ({'blur_sigma': [0.0, 1.0, 2.0]}, 'blur_sigma'),
    ({'motion_prob': 1.5}, 'motion_prob.*1.5'),
    ({'motion_fraction': -0.1}, 'motion_fraction'),
    ({'motion_max_shift': 'large'}, 'motion_max_shift'),
    ({'clip': 'yes'}, 'clip'),
])
def test_config_rejects_invalid_values_naming_the_key(bad, message):
    with pytest.raises(ValueError, match=message):
        DegradationConfig.from_dict(bad)


def test_config_round_trips_through_json_and_yaml():
    config = DegradationConfig.from_dict(dict(FULL_CONFIG, downsample='kspace', clip=False))
    assert DegradationConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert DegradationConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config
