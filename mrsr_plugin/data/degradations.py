"""MR degradations that make LR training images from HR slices: down-sampling, blur, patient motion, Rician noise.

Every function takes a single-channel image of shape (H, W) with intensities in [0, 1] and returns float32.
Randomness comes only from the ``np.random.Generator`` passed in, so
``degrade(hr, scale, config, rng_for(seed, key, scale))`` is bit-identical across processes and runs.

Fourier convention: the centred k-space of an image is ``fftshift(fft2(img))``; its DC coefficient sits at
(H // 2, W // 2) for odd and even sizes alike, and its rows are the phase-encode lines.

Grid convention, shared by every down-sampler at scale s: LR pixel (i, j) is centred on the centre of the s x s HR
block it covers, HR pixel (s * i + (s - 1) / 2, s * j + (s - 1) / 2), so the LR and HR grids have the same outer
edges. Bicubic upsampling with align_corners=False, pixel shuffle and the DICOM geometry that inference writes
(:func:`mrsr_plugin.apps.infer.dicom.update_geometry`) assume this grid.
"""
import dataclasses
import functools
import hashlib
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


def _as_image(img):
    """Returns ``img`` as a float64 (H, W) array; raises ValueError for anything but a 2-D image."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f'expected a single-channel image of shape (H, W), got shape {img.shape}')
    return img


def _check_scale(img, scale):
    """Raises ValueError unless ``scale`` is a positive integer dividing both sides of the (H, W) ``img``."""
    if isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or scale < 1:
        raise ValueError(f'scale must be a positive integer, got {scale!r}')
    if img.shape[0] % scale or img.shape[1] % scale:
        raise ValueError(f'image shape {img.shape} is not divisible by scale {scale}')


def _check_number(key, value, low, high):
    """Returns ``value`` as float; raises ValueError naming ``key`` unless it is a real number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
        raise ValueError(f'{key} must be a number in [{low}, {high}], got {value!r}')
    return float(value)


@functools.lru_cache(maxsize=16)
def _bicubic_matrix(length, scale):
    """(length / scale, length) float64 matrix of MATLAB's antialiased bicubic ``imresize(x, 1 / scale)`` along one
    axis (BasicSR's ``calculate_weights_indices`` with its symmetric border folded in); read-only.

    Output sample x (1-based) sits at input position u = s x + (1 - s) / 2; the antialiasing kernel is Keys' cubic
    (a = -0.5) stretched by s (width 4 s), its taps normalised to sum to 1; inputs beyond the border are mirrored with
    the edge repeated (MATLAB's 'symmetric').
    """
    u = np.arange(1, length // scale + 1) * scale + 0.5 * (1 - scale)
    taps = np.floor(u - 2 * scale)[:, None] + np.arange(4 * scale + 2)  # 1-based input positions, a few spare
    d = np.abs(u[:, None] - taps) / scale
    weights = np.where(d <= 1, (1.5 * d - 2.5) * d * d + 1, np.where(d <= 2, ((-0.5 * d + 2.5) * d - 4) * d + 2, 0))
    weights /= weights.sum(axis=1, keepdims=True)
    source = (taps.astype(np.int64) - 1) % (2 * length)  # 0-based, in one period of the mirrored signal
    source = np.where(source < length, source, 2 * length - 1 - source)
    matrix = np.zeros((len(u), length))
    np.add.at(matrix, (np.repeat(np.arange(len(u)), taps.shape[1]), source.ravel()), weights.ravel())
    matrix.flags.writeable = False
    return matrix


def bicubic_downsample(hr, scale):
    """MATLAB-style bicubic down-sampling with antialiasing: BasicSR's ``imresize(hr, 1 / scale)`` in NumPy, to
    float32 rounding (float64 separable matrices; BasicSR's runs in float32 torch and this module imports no torch).

    Args:
        hr (ndarray): HR image, (H, W); H and W divisible by ``scale``.
        scale (int): Down-sampling factor.

    Returns:
        ndarray: LR image, (H / scale, W / scale), float32.
    """
    hr = _as_image(hr)
    _check_scale(hr, scale)
    return (_bicubic_matrix(hr.shape[0], scale) @ hr @ _bicubic_matrix(hr.shape[1], scale).T).astype(np.float32)


def _translation_ramp(shape, shift):
    """Centred k-space factors exp(-2 pi i (ky * dy + kx * dx)), (H, W) complex128, ky and kx in cycles per pixel:
    multiplied into the centred k-space of an (H, W) image they translate it by ``shift`` = (dy, dx) pixels."""
    freq_y = np.fft.fftshift(np.fft.fftfreq(shape[0]))[:, None]
    freq_x = np.fft.fftshift(np.fft.fftfreq(shape[1]))[None, :]
    return np.exp(-2j * np.pi * (freq_y * shift[0] + freq_x * shift[1]))


def kspace_truncate(hr, scale):
    """MR down-sampling: keep the central (H / scale, W / scale) block of the centred k-space.

    Along an axis with M = N / scale LR samples the block holds the frequencies -(M // 2) ... (M - 1) // 2, which is
    what a scanner acquiring M samples measures. The inverse FFT is divided by scale**2 so that the DC term, i.e. the
    mean intensity, is preserved, and its magnitude is returned, as in an MR reconstruction. For even M the block
    holds the -M/2 coefficient without its +M/2 partner, so the complex image of a real HR is not exactly real; the
    magnitude absorbs this.

    Sampling grid: the block is multiplied by the phase ramp of a translation by -(scale - 1) / 2 HR pixels (see
    :func:`shift_kspace_lines`), so that LR pixel (i, j) lies at the centre of its scale x scale HR block, as the
    module's grid convention says (and as a scanner with the same field of view and M samples places its pixels).
    An HR image whose spectrum lies inside the kept band, without the -M/2 coefficient, is reproduced exactly at
    those block centres.

    Args:
        hr (ndarray): HR image, (H, W); H and W divisible by ``scale``.
        scale (int): Down-sampling factor.

    Returns:
        ndarray: LR magnitude image, (H / scale, W / scale), float32.
    """
    hr = _as_image(hr)
    _check_scale(hr, scale)
    (h, w), lr_h, lr_w = hr.shape, hr.shape[0] // scale, hr.shape[1] // scale
    top, left = h // 2 - lr_h // 2, w // 2 - lr_w // 2  # the DC coefficient lands on (lr_h // 2, lr_w // 2)
    to_block_centres = _translation_ramp(hr.shape, (-(scale - 1) / 2, -(scale - 1) / 2))
    kspace = (np.fft.fftshift(np.fft.fft2(hr)) * to_block_centres)[top:top + lr_h, left:left + lr_w]
    lr = np.fft.ifft2(np.fft.ifftshift(kspace)) / scale**2
    return np.abs(lr).astype(np.float32)


def gaussian_blur(img, sigma):
    """Isotropic Gaussian blur, kernel truncated at 4 sigma, borders reflected (``dcba|abcd``).

    Args:
        img (ndarray): Image, (H, W).
        sigma (float): Standard deviation in pixels; 0 returns the image unchanged.

    Returns:
        ndarray: Blurred image, (H, W), float32.
    """
    img = _as_image(img)
    sigma = _check_number('sigma', sigma, 0, math.inf)
    if sigma == 0:
        return img.astype(np.float32)
    radius = math.ceil(4 * sigma)
    taps = np.exp(-np.arange(-radius, radius + 1)**2 / (2 * sigma**2))
    taps /= taps.sum()
    (h, w), padded = img.shape, np.pad(img, radius, mode='symmetric')
    rows = sum(tap * padded[i:i + h, :] for i, tap in enumerate(taps))  # (H, W + 2 * radius)
    return sum(tap * rows[:, i:i + w] for i, tap in enumerate(taps)).astype(np.float32)


def rician_noise(img, sigma, rng):
    """Magnitude of the image plus complex Gaussian noise: sqrt((img + n1)**2 + n2**2), n1, n2 ~ N(0, sigma**2).

    Args:
        img (ndarray): Image, (H, W).
        sigma (float): Noise standard deviation in units of the [0, 1] intensity range; 0 returns the image.
        rng (np.random.Generator): Draws n1 and n2 as one (2, H, W) array.

    Returns:
        ndarray: Noisy image, (H, W), float32.
    """
    img = _as_image(img)
    sigma = _check_number('sigma', sigma, 0, math.inf)
    if sigma == 0:
        return img.astype(np.float32)
    real, imag = rng.normal(0.0, sigma, size=(2, *img.shape))
    return np.sqrt((img + real)**2 + imag**2).astype(np.float32)


def sample_motion(height, rng, max_shift=2.0, corrupted_fraction=0.3):
    """Draws one motion event of :func:`motion_artifact`: which phase-encode lines it corrupts and by how much.

    Args:
        height (int): Number of phase-encode lines H.
        rng (np.random.Generator): Draws the first line (uniform over all H - n + 1 starts, so the block can cover
            the k-space centre), then (dy, dx), each uniform in [-max_shift, max_shift].
        max_shift (float): Largest translation in pixels.
        corrupted_fraction (float): Fraction of the lines in the block, n = round(corrupted_fraction * H).

    Returns:
        tuple[slice, tuple[float, float]]: Rows of the centred k-space and the (dy, dx) translation.
    """
    max_shift = _check_number('max_shift', max_shift, 0, math.inf)
    num_lines = round(_check_number('corrupted_fraction', corrupted_fraction, 0, 1) * height)
    start = int(rng.integers(0, height - num_lines + 1))
    shift_y, shift_x = rng.uniform(-max_shift, max_shift, size=2)
    return slice(start, start + num_lines), (float(shift_y), float(shift_x))


def shift_kspace_lines(img, lines, shift):
    """Complex image whose centred k-space rows ``lines`` carry the phase ramp of a translation by ``shift``.

    The rows are multiplied by exp(-2 pi i (ky * dy + kx * dx)), ky and kx in cycles per pixel, which moves the image
    they encode by dy pixels down and dx right, periodically. This changes phases only, so |k-space| is unchanged;
    with every row selected and integer shifts the result equals ``np.roll(img, (dy, dx), axis=(0, 1))``.

    Args:
        img (ndarray): Image, (H, W).
        lines (slice | ndarray): Rows of the centred k-space to shift.
        shift (tuple[float, float]): Translation (dy, dx) in pixels.

    Returns:
        ndarray: Complex image, (H, W), complex128.
    """
    img = _as_image(img)
    kspace = np.fft.fftshift(np.fft.fft2(img))
    kspace[lines] *= _translation_ramp(img.shape, shift)[lines]
    return np.fft.ifft2(np.fft.ifftshift(kspace))


def motion_artifact(img, rng, max_shift=2.0, corrupted_fraction=0.3):
    """Rigid in-plane patient motion during part of a sequential Cartesian acquisition.

    The patient is translated by a random (dy, dx) (both axes) while one contiguous block of phase-encode lines,
    covering ``corrupted_fraction`` of them, is acquired, and is at rest for the other lines (see
    :func:`sample_motion` and :func:`shift_kspace_lines`). The result is the magnitude image, with the ghosting
    along the phase-encode axis (H) that such motion causes.

    Args:
        img (ndarray): Image, (H, W).
        rng (np.random.Generator): Source of the motion event.
        max_shift (float): Largest translation in pixels; 0 returns the image unchanged.
        corrupted_fraction (float): Fraction of the phase-encode lines affected; 0 returns the image unchanged.

    Returns:
        ndarray: Magnitude image, (H, W), float32.
    """
    img = _as_image(img)
    lines, shift = sample_motion(img.shape[0], rng, max_shift, corrupted_fraction)
    if lines.start == lines.stop or shift == (0.0, 0.0):
        return img.astype(np.float32)
    return np.abs(shift_kspace_lines(img, lines, shift)).astype(np.float32)


DOWNSAMPLERS = {'bicubic': bicubic_downsample, 'kspace': kspace_truncate}


def _sigma_range(key, value):
    """Returns a (min, max) pair of floats from a scalar x (-> (x, x)) or a 1- or 2-element list or tuple."""
    pair = (value, value) if isinstance(value, numbers.Real) else value
    if isinstance(pair, (list, tuple)) and len(pair) == 1:
        pair = (pair[0], pair[0])
    if (not isinstance(pair, (list, tuple)) or len(pair) != 2
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and v >= 0 for v in pair)
            or not math.isfinite(pair[1]) or pair[0] > pair[1]):
        raise ValueError(f'{key} must be a number >= 0 or a [min, max] pair with 0 <= min <= max, got {value!r}')
    return float(pair[0]), float(pair[1])


def check_fields(cls, d, what):
    """ValueError naming ``what`` unless ``d`` is a dict whose keys are all fields of the dataclass ``cls``."""
    known = [field.name for field in dataclasses.fields(cls)]
    if not isinstance(d, Mapping):
        raise ValueError(f'{what} must be a dict of {known}, got {d!r}')
    unknown = [key for key in d if key not in known]
    if unknown:
        raise ValueError(f'unknown {what} key(s) {unknown}; known keys are {known}')


@dataclass
class DegradationConfig:
    """Options of :func:`degrade`; each (min, max) pair is sampled uniformly per image.

    Attributes:
        downsample (str): 'bicubic' (:func:`bicubic_downsample`) or 'kspace' (:func:`kspace_truncate`).
        blur_sigma (tuple[float, float]): Gaussian sigma in HR pixels, applied to the HR before down-sampling.
        noise_sigma (tuple[float, float]): Rician sigma in [0, 1] intensity units, applied to the LR.
        motion_prob (float): Probability that an image gets :func:`motion_artifact` (on the HR, first).
        motion_max_shift (float): ``max_shift`` of :func:`motion_artifact`, in HR pixels.
        motion_fraction (float): ``corrupted_fraction`` of :func:`motion_artifact`.
        clip (bool): Clip the LR to [0, 1].
    """
    downsample: str = 'bicubic'
    blur_sigma: tuple = (0.0, 0.0)
    noise_sigma: tuple = (0.0, 0.0)
    motion_prob: float = 0.0
    motion_max_shift: float = 2.0
    motion_fraction: float = 0.3
    clip: bool = True

    def __post_init__(self):
        if not isinstance(self.downsample, str) or self.downsample not in DOWNSAMPLERS:
            raise ValueError(f'downsample must be one of {list(DOWNSAMPLERS)}, got {self.downsample!r}')
        self.blur_sigma = _sigma_range('blur_sigma', self.blur_sigma)
        self.noise_sigma = _sigma_range('noise_sigma', self.noise_sigma)
        self.motion_prob = _check_number('motion_prob', self.motion_prob, 0, 1)
        self.motion_max_shift = _check_number('motion_max_shift', self.motion_max_shift, 0, math.inf)
        self.motion_fraction = _check_number('motion_fraction', self.motion_fraction, 0, 1)
        if not isinstance(self.clip, bool):
            raise ValueError(f'clip must be true or false, got {self.clip!r}')

    @classmethod
    def from_dict(cls, d: dict | None) -> 'DegradationConfig':
        """Config from a YAML/CLI-style dict: (min, max) pairs may be scalars or lists; None gives the defaults.

        Raises:
            ValueError: For unknown keys (named in the message) or invalid values.
        """
        if d is None:
            return cls()
        check_fields(cls, d, 'degradation config')
        return cls(**d)

    def to_dict(self) -> dict:
        """JSON/YAML-serialisable dict (pairs as lists) that :meth:`from_dict` turns back into an equal config."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}


def degrade(hr, scale, config, rng):
    """LR image from an HR slice: motion (with probability motion_prob) -> blur -> down-sampling -> noise -> clip.

    ``rng`` is used in a fixed order: whether to add motion, the blur sigma and the noise sigma (all three always
    drawn), then the motion event (if any) and the noise field (if its sigma > 0).

    Args:
        hr (ndarray): HR image, (H, W), in [0, 1]; H and W divisible by ``scale``.
        scale (int): Down-sampling factor.
        config (DegradationConfig | dict | None): Degradation options; a dict goes through ``from_dict``.
        rng (np.random.Generator): Source of randomness, e.g. ``rng_for(seed, key, scale)``.

    Returns:
        ndarray: LR image, (H / scale, W / scale), float32.
    """
    if not isinstance(config, DegradationConfig):
        config = DegradationConfig.from_dict(config)
    img = _as_image(hr)
    _check_scale(img, scale)
    add_motion = rng.random() < config.motion_prob
    blur_sigma = rng.uniform(*config.blur_sigma)
    noise_sigma = rng.uniform(*config.noise_sigma)
    if add_motion:
        img = motion_artifact(img, rng, config.motion_max_shift, config.motion_fraction)
    img = gaussian_blur(img, blur_sigma)
    lr = rician_noise(DOWNSAMPLERS[config.downsample](img, scale), noise_sigma, rng)
    return np.clip(lr, 0, 1) if config.clip else lr


def rng_for(seed, key, scale):
    """Generator that depends only on (seed, key, scale), identically in every process.

    The key enters through the first 8 bytes of its SHA-256 (Python's ``hash`` is salted per process).

    Args:
        seed (int): Non-negative base seed.
        key (str): Image identifier, e.g. its LMDB key.
        scale (int): Down-sampling factor, so every scale of one HR gets its own stream.

    Returns:
        np.random.Generator
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
    if isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or not 1 <= scale < 2**32:
        raise ValueError(f'scale must be a positive integer, got {scale!r}')
    if not isinstance(key, str):
        raise ValueError(f'key must be a string, got {key!r}')
    digest = hashlib.sha256(key.encode('utf-8')).digest()
    key_words = [int.from_bytes(digest[i:i + 4], 'little') for i in (0, 4)]
    # 32-bit words first and the unbounded seed last, so different (seed, key, scale) never give the same entropy.
    return np.random.default_rng([*key_words, int(scale), int(seed)])
