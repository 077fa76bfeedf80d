"""Slice-profile degradation along one image axis: how thick slices are made from thin ones, and interpolated
back; the training side of through-plane super-resolution (:mod:`mrsr_plugin.apps.through_plane`; SMORE, Zhao et al.
2021).

Lengths are in mm. A thick-slice series has slices ``slice_thickness`` thick every ``slice_thickness + slice_gap``;
the output has slices every ``target_spacing``, and the through-plane scale s = (slice_thickness + slice_gap) /
target_spacing must be an integer (:class:`ThroughPlaneConfig`). The degraded axis is axis 0 (z of a volume, the
rows of a training image).

Training pairs from in-plane slices: one in-plane axis of an HR slice plays z and becomes the rows (:func:`hr_rows`).
What one pixel along it stands for:

- SMORE's rule (``inplane_spacing`` null): one HR pixel is one ``target_spacing``-thick slab, whatever the pixel's
  size in mm; kernel width and decimation are in units of target_spacing;
- ``inplane_spacing`` set (e.g. 0.5): the rows are first averaged over target_spacing-wide slabs (6 rows for
  0.5 -> 3 mm; for a ratio that is not an integer, 3.6 for 0.5 -> 1.8 mm, the rows a slab cuts count with the
  fraction inside it: area resampling), so that a row is a target_spacing slab in mm too, as z is in the sagittal and
  coronal reformats that inference runs on (0.5 mm in-plane, 3 mm along z); this matches the anatomy's scale.

Either way the HR rows are contiguous target_spacing slabs (slice thickness = spacing), the model of a
contiguous thin-slice series. A thick slice of the profile p (integral 1, FWHM slice_thickness) is
``sum_i tap_i * row_i`` with ``tap_i`` = the integral of p over row i's slab (:func:`slice_profile_kernel`): the
slab average of the intensity, if the intensity is constant within a slab. The default profile is 'rect', the ideal
slice of thickness slice_thickness: it is exact for stacking slabs (a 6-mm slice over 3-mm slabs is 1/4, 1/2, 1/4 of
the three slabs it covers; a 3-mm slice is the slab itself, so "keep every other slice" is pure decimation), and
that is what a thicker acquisition of the same volume is, up to the real profile's soft edges. 'gaussian' is
SMORE's model (FWHM = slice_thickness), which also blurs when the thick slice is no thicker than a slab.

Degradation (:func:`thick_slices`): the profile's taps along axis 0 (borders mirrored, ``dcba|abcd``), then every
s-th row from row 0. Interpolation back (:func:`interpolate_slices`): PyTorch's cubic (Keys, a = -0.75) along axis 0
only, align_corners=True, onto the kept-slice grid: source row k becomes output row s * k, with the s - 1 rows
between new, s (n - 1) + 1 rows in all.
"""
import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from .degradations import check_fields

PROFILES = ('rect', 'gaussian')
AXES = ('random', 0, 1)
INTERPOLATIONS = {'cubic': 'bicubic', 'linear': 'bilinear'}  # along one axis: F.interpolate's 2-D modes
FWHM_PER_SIGMA = 2 * math.sqrt(2 * math.log(2))


def _positive(key, value, allow_zero=False):
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or value < 0 or (value == 0 and not allow_zero)):
        raise ValueError(f'{key} must be a number {">=" if allow_zero else ">"} 0 (mm), got {value!r}')
    return float(value)


def _integer_ratio(key, ratio):
    """round(ratio) if ratio is a positive integer up to float rounding; ValueError naming ``key`` otherwise."""
    whole = round(ratio)
    if whole < 1 or abs(ratio - whole) > 1e-6:
        raise ValueError(f'{key} must be a positive integer, got {ratio:g}')
    return whole


@dataclass
class ThroughPlaneConfig:
    """The ``degradation:`` block of a through-plane dataset (module docstring for the conventions).

    Attributes:
        slice_thickness (float): Thickness of the thick slices, mm (the profile's FWHM).
        target_spacing (float): Spacing (= thickness) of the output slices, mm; one HR row of a training slice.
        slice_gap (float): Gap between thick slices, mm; (slice_thickness + slice_gap) / target_spacing is the
            scale s, an integer. Default: 0.
        profile (str): 'rect' (ideal slice) or 'gaussian' (SMORE). Default: 'rect'.
        axis (str | int): In-plane axis of a training slice that plays z: 0 (rows), 1 (columns) or 'random' (per
            training sample; per image key, fixed, in validation). Default: 'random'.
        inplane_spacing (float | None): Pixel spacing of the training slices, mm; set, the rows are first averaged
            to target_spacing slabs (a ratio of at least 1, area-weighted where it is not an integer); null:
            SMORE's rule, a pixel stands for target_spacing.
            Default: None.
        slice_shift (float): mm, standard deviation of a random shift of each thick slice along the other in-plane
            axis (the columns of a training pair; :func:`shift_rows`), drawn per slice and training sample; the HR
            target stays in place. It models the misregistration between neighbouring slices of a real series
            (motion between interleaved slice packages), which a model that has never seen it reads as detail along
            z. Needs ``inplane_spacing``. Training pairs only; validation pairs are unshifted. Default: 0.
    """
    slice_thickness: float
    target_spacing: float
    slice_gap: float = 0.0
    profile: str = 'rect'
    axis: object = 'random'
    inplane_spacing: float | None = None
    slice_shift: float = 0.0

    def __post_init__(self):
        self.slice_thickness = _positive('slice_thickness', self.slice_thickness)
        self.target_spacing = _positive('target_spacing', self.target_spacing)
        self.slice_gap = _positive('slice_gap', self.slice_gap, allow_zero=True)
        if self.profile not in PROFILES:
            raise ValueError(f'profile must be one of {list(PROFILES)}, got {self.profile!r}')
        if isinstance(self.axis, bool) or self.axis not in AXES:
            raise ValueError(f'axis must be one of {list(AXES)}, got {self.axis!r}')
        _integer_ratio('(slice_thickness + slice_gap) / target_spacing', self.scale_ratio)
        if self.inplane_spacing is not None:
            self.inplane_spacing = _positive('inplane_spacing', self.inplane_spacing)
            if self.target_spacing < self.inplane_spacing:
                raise ValueError(f'target_spacing / inplane_spacing must be at least 1 (the HR rows are averaged, '
                                 f'not interpolated), got {self.target_spacing / self.inplane_spacing:g}')
        self.slice_shift = _positive('slice_shift', self.slice_shift, allow_zero=True)
        if self.slice_shift and self.inplane_spacing is None:
            raise ValueError('slice_shift needs inplane_spacing (the shift is in mm along the in-plane pixels)')

    @property
    def scale_ratio(self):
        return (self.slice_thickness + self.slice_gap) / self.target_spacing

    @property
    def scale(self):
        """s: thick slices per output slice spacing, (slice_thickness + slice_gap) / target_spacing."""
        return round(self.scale_ratio)

    @property
    def row_block(self):
        """Rows of a training slice averaged into one HR row: target_spacing / inplane_spacing (float), or 1."""
        return 1 if self.inplane_spacing is None else self.target_spacing / self.inplane_spacing

    def kernel(self):
        """The profile's taps on the HR rows (:func:`slice_profile_kernel`), (2 r + 1,) float64."""
        return slice_profile_kernel(self.slice_thickness / self.target_spacing, self.profile)

    @classmethod
    def from_dict(cls, d):
        """Config from the YAML dict; ValueError naming unknown or missing keys and bad values."""
        check_fields(cls, d, 'through-plane degradation')
        missing = [key for key in ('slice_thickness', 'target_spacing') if key not in d]
        if missing:
            raise ValueError(f'through-plane degradation needs {missing}')
        return cls(**d)


def slice_profile_kernel(thickness, profile='rect', step=1.0):
    """Taps of a slice profile on a grid of pixels ``step`` wide centred on k * step, k = -r .. r.

    The profile p has integral 1 and FWHM ``thickness``: 'rect' is 1 / thickness on [-thickness / 2, thickness / 2],
    'gaussian' has sigma = thickness / (2 sqrt(2 ln 2)) and is cut at 4 sigma. Tap k is the integral of p over
    pixel k, [(k - 1/2) step, (k + 1/2) step], so the taps sum to 1 (exactly for 'rect'; 'gaussian' is renormalised
    after the cut), and tap_k / step tends to p(k step) as step -> 0.

    Args:
        thickness (float): FWHM in the grid's units (pixels of the HR rows: slice_thickness / target_spacing); 0
            gives the single tap [1].
        profile (str): 'rect' or 'gaussian'. Default: 'rect'.
        step (float): Pixel width. Default: 1.

    Returns:
        ndarray: (2 r + 1,) float64, symmetric.
    """
    if profile not in PROFILES:
        raise ValueError(f'profile must be one of {list(PROFILES)}, got {profile!r}')
    thickness, step = _positive('thickness', thickness, allow_zero=True), _positive('step', step)
    if thickness == 0:
        return np.ones(1)
    if profile == 'rect':
        radius = math.ceil((thickness / step + 1) / 2) - 1  # pixels that overlap [-thickness / 2, thickness / 2]
        edges = (np.arange(-radius, radius + 2) - 0.5) * step
        cdf = np.clip(edges, -thickness / 2, thickness / 2) / thickness + 0.5
    else:
        sigma = thickness / FWHM_PER_SIGMA
        radius = math.ceil(4 * sigma / step)
        edges = (np.arange(-radius, radius + 2) - 0.5) * step
        cdf = np.array([0.5 * (1 + math.erf(e / (sigma * math.sqrt(2)))) for e in edges])
    taps = np.diff(cdf)
    return taps / taps.sum()


def profile_filter(array, taps):
    """``sum_i taps[i] * array[j + i - r]`` along axis 0, borders mirrored (``dcba|abcd``): (n, ...) -> float32."""
    array = np.asarray(array, np.float64)
    radius = len(taps) // 2
    if radius == 0:
        return (array * taps[0]).astype(np.float32)
    padded = np.pad(array, [(radius, radius)] + [(0, 0)] * (array.ndim - 1), mode='symmetric')
    return sum(tap * padded[i:i + len(array)] for i, tap in enumerate(taps)).astype(np.float32)


def thick_slices(array, config):
    """Thick slices of the profile from contiguous target_spacing slabs along axis 0, one every s rows from row 0.

    Args:
        array (ndarray): (n, ...) HR slabs.
        config (ThroughPlaneConfig): Profile and scale s.

    Returns:
        ndarray: (ceil(n / s), ...) float32.
    """
    return profile_filter(array, config.kernel())[::config.scale]


def output_length(num_slices, scale):
    """Slices of the kept-slice grid: s * (n - 1) + 1."""
    return scale * (num_slices - 1) + 1


def interpolate_slices(array, scale, mode='cubic'):
    """Interpolation along axis 0 onto the kept-slice grid: (n, ...) -> (s * (n - 1) + 1, ...) float32.

    Output row k samples source position k / s: ``F.interpolate`` with align_corners=True, 'bicubic' (Keys,
    a = -0.75; rows beyond the ends repeat the end rows) or 'bilinear' over (n, prod(rest)), whose second axis keeps
    its size and so is not touched. Row s * k is source row k (exactly, up to float rounding for s not a power of 2).

    Args:
        array (ndarray): (n, ...), n >= 2.
        scale (int): s.
        mode (str): 'cubic' or 'linear'. Default: 'cubic'.
    """
    array = np.asarray(array, np.float32)
    if len(array) < 2:
        raise ValueError(f'interpolation along the slices needs at least 2 slices, got {len(array)}')
    flat = torch.from_numpy(np.ascontiguousarray(array.reshape(1, 1, len(array), -1)))
    out = F.interpolate(flat, size=(output_length(len(array), scale), flat.shape[-1]), mode=INTERPOLATIONS[mode],
                        align_corners=True)
    return out.reshape(-1, *array.shape[1:]).numpy()


def shift_rows(array, shifts):
    """Each row i of (H, W) ``array`` moved by ``shifts[i]`` pixels along the columns (positive: to higher
    columns), sub-pixel, by the Fourier shift theorem (periodic in W: the slice's background wraps): (H, W) float32."""
    array = np.asarray(array, np.float64)
    phase = np.exp(-2j * np.pi * np.fft.rfftfreq(array.shape[1])[None] * np.asarray(shifts, np.float64)[:, None])
    return np.fft.irfft(np.fft.rfft(array, axis=1) * phase, n=array.shape[1], axis=1).astype(np.float32)


def hr_rows(img, config, axis):
    """A training slice (H, W) as HR rows: ``axis`` moved to the rows, then averaged over slabs of
    b = ``config.row_block`` rows (area-weighted where b is not an integer; the remainder dropped):
    (floor(H / b), W) or (floor(W / b), H) float32."""
    img = np.asarray(img, np.float64)
    img = img.T if axis == 1 else img
    block = config.row_block
    rows = int(len(img) / block + 1e-9)
    if abs(block - round(block)) < 1e-9:
        block = round(block)
        return img[:rows * block].reshape(rows, block, -1).mean(axis=1).astype(np.float32)
    # the integral of the piecewise-constant rows up to each slab edge, then differences: exact area averages
    cumulative = np.concatenate([np.zeros((1, img.shape[1])), np.cumsum(img, axis=0)])
    edges = np.arange(rows + 1) * block
    whole = np.minimum(np.floor(edges).astype(int), len(img) - 1)
    integral = cumulative[whole] + (edges - whole)[:, None] * img[whole]
    return (np.diff(integral, axis=0) / block).astype(np.float32)


# --- the forward model applied to an output volume: data consistency ------------------------------------------------


def forward_matrix(length, config):
    """The degradation :func:`thick_slices` as a matrix on a stack of ``length`` output slices.

    Returns:
        ndarray: (ceil(length / s), length) float64 A with ``thick_slices(y, config) == A @ y`` along axis 0
        (profile taps, mirrored borders, every s-th row from row 0).
    """
    taps, radius = config.kernel(), len(config.kernel()) // 2
    index = np.pad(np.arange(length), radius, mode='symmetric')  # the source row of each padded row
    matrix = np.zeros((length, length))
    for row in range(length):
        for i, tap in enumerate(taps):
            matrix[row, index[row + i]] += tap
    return matrix[::config.scale]


def enforce_data_consistency(volume, acquired, config):
    """The volume nearest to ``volume`` (least squares, per pixel column along axis 0) whose thick slices are the
    ``acquired`` ones: ``y + A^T (A A^T)^-1 (x - A y)`` with A = :func:`forward_matrix`.

    The correction is the smallest that makes the forward model exact, and only that: it lies in the span of the
    profile's rows, so it changes nothing the acquired slices do not constrain. For a slice profile one output slab
    thick (rect, slice_thickness = target_spacing: "keep every other slice") it copies the acquired slices back onto
    output slices s k and leaves the others alone; for wider profiles it spreads the residual of each acquired slice
    over the slabs it covers in proportion to the profile's taps. Per pixel its RMS is at most the residual's RMS /
    sigma_min(A) (:func:`consistency_bound`).

    Args:
        volume (ndarray): (s * (n - 1) + 1, ...) output of a through-plane network on the kept-slice grid.
        acquired (ndarray): (n, ...) the slices it was computed from.
        config (ThroughPlaneConfig): The model's slice profile.

    Returns:
        ndarray: Like ``volume``, float32.
    """
    volume, acquired = np.asarray(volume, np.float64), np.asarray(acquired, np.float64)
    matrix = forward_matrix(len(volume), config)
    if matrix.shape[0] != len(acquired):
        raise ValueError(f'{len(volume)} output slices are not the kept-slice grid of {len(acquired)} slices at scale '
                         f'{config.scale}')
    flat = volume.reshape(len(volume), -1)
    residual = acquired.reshape(len(acquired), -1) - matrix @ flat
    correction = matrix.T @ np.linalg.solve(matrix @ matrix.T, residual)
    return (flat + correction).reshape(volume.shape).astype(np.float32)


def consistency_bound(length, config):
    """1 / sigma_min of :func:`forward_matrix`: how many times the RMS of the residual the RMS of the correction of
    :func:`enforce_data_consistency` may be, per pixel column (1 for a one-slab profile)."""
    return float(1 / np.linalg.svd(forward_matrix(length, config), compute_uv=False).min())


def consistency_nrmse(volume, acquired, config):
    """How far the forward model of ``volume`` is from the ``acquired`` slices: ``||thick_slices(volume) -
    acquired||_2 / ||acquired||_2`` (the NRMSE of :func:`mrsr_plugin.metrics.piq_metric.calculate_mr_nrmse`: RMSE
    relative to the acquired slices' root mean square), 0 when they are reproduced exactly."""
    acquired = np.asarray(acquired, np.float64)
    return float(np.linalg.norm(thick_slices(volume, config) - acquired) / max(np.linalg.norm(acquired), 1e-12))
