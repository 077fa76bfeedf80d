"""Through-plane super-resolution of thick-slice MR with the zoo's 2-D networks, trained on in-plane slices (SMORE,
Zhao et al. 2021): volume inference and the output geometry. The slice-profile degradation, the units and the
training pairs are :mod:`mrsr_plugin.data.slice_profile`'s.

Output grid (the "kept-slice grid"): source slice k becomes output slice s * k and the s - 1 slices between two
source slices are new, so n source slices give s * (n - 1) + 1 output slices whose first and last centres are the
source's (the stack ends half an output spacing beyond them, (s - 1) / (2 s) source spacings less at each end than
the source's slabs). With this grid, keeping every other slice of a 3-mm series and super-resolving it at s = 2 puts
every output slice on a true slice (:mod:`mrsr_plugin.apps.through_plane_evaluation`).

The network has upscale 1 and runs on the thick slices interpolated along z (cubic) onto that grid; with MRDABNet's
``global_skip: bicubic`` it starts as cubic interpolation along z exactly and learns the residual. It runs on
(z, y) sagittal and (z, x) coronal images, z being the rows, as in training.
"""
import functools
import os
import sys
from dataclasses import dataclass

import numpy as np

from mrsr_plugin import checkpoint, weights
from mrsr_plugin.data.slice_profile import (ThroughPlaneConfig, consistency_nrmse, enforce_data_consistency,
                                            interpolate_slices, output_length)
from mrsr_plugin.errors import MRSRUserError
from mrsr_plugin.options import load_options

VIEWS = {'sagittal': (2, 0, 1), 'coronal': (1, 0, 2)}  # (z, y, x) -> images (x, z, y) resp. (y, z, x)


def config_from_options(opt_path):
    """The :class:`ThroughPlaneConfig` of an option file's ``datasets.train.degradation`` (the scale, the profile a
    model was trained for); MRSRUserError naming the file if it has none or a bad one."""
    opt = load_options(opt_path)  # composed files too; MRSRUserError naming the file
    try:
        return ThroughPlaneConfig.from_dict(opt['datasets']['train']['degradation'])
    except (KeyError, TypeError) as err:
        raise MRSRUserError(f'{opt_path}: no datasets.train.degradation: not a through-plane option file') from err
    except ValueError as err:
        raise MRSRUserError(f'{opt_path}: datasets.train.degradation: {err}') from err


def through_plane_config(info, weights, opt_path=None, warn=lambda line: print(line, file=sys.stderr)):
    """The :class:`ThroughPlaneConfig` a model was trained for: ``opt_path``'s where given (a warning where it
    contradicts the checkpoint's), else the ``slice_profile`` of the checkpoint's ``mrsr`` block ``info``.

    Raises:
        MRSRUserError: One line naming ``weights`` when neither says it.
    """
    stored = info.get('slice_profile')
    try:
        stored = None if stored is None else ThroughPlaneConfig.from_dict(stored)
    except (TypeError, ValueError) as err:
        raise MRSRUserError(f'{weights}: the slice_profile of its {checkpoint.KEY} block: {err}') from err
    if opt_path is not None:
        config = config_from_options(opt_path)
        if stored is not None and config != stored:
            warn(f'warning: the slice profile of {opt_path} contradicts the one {weights} was trained with '
                 f'({vars(config)} vs {vars(stored)}); using {opt_path}')
        return config
    if stored is not None:
        return stored
    if info:
        raise MRSRUserError(f'{weights}: an in-plane x{info["scale"]} model (its {checkpoint.KEY} block has no slice '
                            'profile); --through-plane needs one trained by options/through_plane')
    raise MRSRUserError(checkpoint.missing(weights, 'slice profile', '-opt with its through-plane option file'))


def super_resolve_through_plane(upscaler, volume, scale, views=tuple(VIEWS), desc=''):
    """Super-resolve an axial volume along z with an upscale-1 network on its sagittal and coronal reformats.

    The volume is interpolated along z onto the kept-slice grid (:func:`interpolate_slices`, cubic); the network
    runs on every (z', y) image (one per x, sagittal) and every (z', x) image (one per y, coronal), z' being the
    rows as in training, and the result is the mean of the views: each view is the same estimate from another
    direction, and their mean averages out each one's errors without a learned fusion (measured on the validation
    patient, keeping every other slice, MR PSNR over cubic: sagittal alone +0.79 dB, coronal alone +0.95 dB, their
    mean +1.26 dB). Source slices are not put
    back here: :func:`super_resolve_consistently` adds the data-consistency step that makes the slice profile
    reproduce them.

    Args:
        upscaler (Upscaler): An upscale-1 generator (:func:`mrsr_plugin.apps.infer.core.load_generator`).
        volume (ndarray): (z, y, x), normalised as in training (the window is [0, 1]).
        scale (int): s, the through-plane scale.
        views (sequence[str]): 'sagittal' and/or 'coronal'. Default: both.
        desc (str): Progress bar label; '' shows none.

    Returns:
        ndarray: (s * (z - 1) + 1, y, x) float32.
    """
    if upscaler.scale != 1:
        raise MRSRUserError(f'through-plane super-resolution needs an upscale-1 network (options/through_plane), '
                            f'this one upscales x{upscaler.scale}')
    volume = np.asarray(volume, np.float32)
    if volume.ndim != 3:
        raise MRSRUserError(f'expected a (z, y, x) volume, got shape {volume.shape}')
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise MRSRUserError(f'views must be a non-empty list of {list(VIEWS)}, got {list(views)}')
    interpolated = interpolate_slices(volume, scale)
    total = np.zeros_like(interpolated)
    for view in views:
        order = VIEWS[view]
        images = interpolated.transpose(order)
        out = np.concatenate(list(upscaler.batches(images, desc=f'{desc} {view}'.strip(), quiet=not desc)))
        total += out.transpose(np.argsort(order))
    return total / len(views)


def interpolate_slice_values(values, scale):
    """Per-slice values at the output slices, linear in the slice index: output slice k at source index k / s.

    Args:
        values (array-like): (n, ...) e.g. ImagePositionPatient (n, 3) or SliceLocation (n,), n >= 2.
        scale (int): s.

    Returns:
        ndarray: (s * (n - 1) + 1, ...) float64.
    """
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        raise ValueError(f'need the values of at least 2 slices, got {len(values)}')
    index = np.arange(output_length(len(values), scale)) / scale
    flat = values.reshape(len(values), -1)
    columns = [np.interp(index, np.arange(len(values)), flat[:, c]) for c in range(flat.shape[1])]
    return np.stack(columns, axis=1).reshape(len(index), *values.shape[1:])


def dicom_slice_geometry(positions, scale, slice_locations=None):
    """What a DICOM writer needs for the output series of :func:`super_resolve_through_plane`.

    Args:
        positions (array-like): ImagePositionPatient of the source slices in slice order, (n, 3) mm.
        scale (int): s.
        slice_locations (array-like | None): SliceLocation of the source slices, (n,), if they have one.

    Returns:
        dict: ``positions`` (m, 3) ImagePositionPatient per output slice (m = s (n - 1) + 1; orientation and
        PixelSpacing unchanged), ``slice_locations`` (m,) or None, ``spacing`` (SpacingBetweenSlices: the source's
        mean spacing along the stack / s) and ``thickness`` (SliceThickness: the same, the output slices being
        contiguous slabs, module docstring).
    """
    positions = np.asarray(positions, np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f'positions must be (n, 3), got shape {positions.shape}')
    new_positions = interpolate_slice_values(positions, scale)
    spacing = float(np.linalg.norm(positions[-1] - positions[0])) / (len(new_positions) - 1)
    locations = None if slice_locations is None else interpolate_slice_values(slice_locations, scale)
    return {'positions': new_positions, 'slice_locations': locations, 'spacing': spacing, 'thickness': spacing}


def volume_geometry(spacing, origin, direction, size, scale):
    """Geometry of the output volume in SimpleITK's order (x, y, z), slices along the third axis.

    The first slice's centre stays where it was, so the origin (the first voxel's centre) and the direction are
    unchanged; the z spacing is divided by s and the slice count becomes s (n - 1) + 1.

    Args:
        spacing, origin (sequence[float]): (x, y, z) mm, as ``image.GetSpacing()`` / ``GetOrigin()`` return them.
        direction (sequence[float]): 9 direction cosines, as ``image.GetDirection()``.
        size (sequence[int]): (x, y, n).
        scale (int): s.

    Returns:
        tuple: (spacing, origin, direction, size) of the output, tuples.
    """
    spacing, size = tuple(float(v) for v in spacing), tuple(int(v) for v in size)
    return ((*spacing[:2], spacing[2] / scale), tuple(float(v) for v in origin), tuple(float(v) for v in direction),
            (*size[:2], output_length(size[2], scale)))


# --- the input's slice geometry against the model's -----------------------------------------------------------------
GEOMETRY_TOLERANCE = 0.15  # relative: thickness and spacing each within 15% of the model's (3 mm fits 2.55-3.45 mm)


@dataclass
class Acquisition:
    """Slice geometry of a thick-slice series: slices ``thickness`` mm thick every ``spacing`` mm (centre to
    centre); ``assumed`` when the input did not say its thickness and it was taken to be the spacing."""
    thickness: float
    spacing: float
    assumed: bool = False

    def __str__(self):
        text = f'{self.thickness:.3g} mm slices every {self.spacing:.3g} mm'
        return text + (' (thickness assumed = spacing; set it with --slice-thickness)' if self.assumed else '')

    @classmethod
    def of_model(cls, config):
        """The acquisition a :class:`ThroughPlaneConfig` was trained for: slice_thickness every slice_thickness +
        slice_gap (e.g. options/through_plane/train_mrdab_z2.yml: 3 mm every 6 mm; ..._thick: 6 mm every 6 mm)."""
        return cls(config.slice_thickness, config.slice_thickness + config.slice_gap)

    def fits(self, config, tolerance=GEOMETRY_TOLERANCE):
        """Whether thickness and spacing are each within ``tolerance`` (relative) of the model's."""
        model = Acquisition.of_model(config)
        return (abs(self.thickness - model.thickness) <= tolerance * model.thickness
                and abs(self.spacing - model.spacing) <= tolerance * model.spacing)


def dicom_acquisition(headers, slice_thickness=None):
    """The :class:`Acquisition` of a DICOM series from its headers in slice order: the spacing of
    ImagePositionPatient along the stack (SpacingBetweenSlices where positions are missing), the thickness from
    SliceThickness (where absent: ``slice_thickness`` if given, else the spacing, ``assumed``).

    Raises:
        ValueError: Neither positions nor SpacingBetweenSlices give a spacing.
    """
    positions = [ds.get('ImagePositionPatient') for ds in headers]
    if len(headers) > 1 and all(p is not None for p in positions):
        positions = np.asarray(positions, np.float64)
        spacing = float(np.linalg.norm(positions[-1] - positions[0])) / (len(positions) - 1)
    elif headers[0].get('SpacingBetweenSlices'):
        spacing = abs(float(headers[0].SpacingBetweenSlices))
    else:
        raise ValueError('no slice positions nor SpacingBetweenSlices: the slice spacing is unknown')
    thickness = headers[0].get('SliceThickness')
    if thickness in (None, '') or float(thickness) <= 0:
        return volume_acquisition(spacing, slice_thickness)
    return Acquisition(float(thickness), spacing)


def volume_acquisition(spacing, slice_thickness=None):
    """The :class:`Acquisition` of a volume file: its slice spacing (mm, the third image axis) and
    ``slice_thickness`` (mm; None: a NIfTI, MetaImage or NRRD file has none, so the spacing, ``assumed``)."""
    if slice_thickness is None:
        return Acquisition(float(spacing), float(spacing), assumed=True)
    return Acquisition(float(slice_thickness), float(spacing))


@functools.lru_cache
def _shipped_configs(manifest):
    """{name: ThroughPlaneConfig} of the through-plane weights of the manifest whose files are present."""
    configs = {}
    for name, entry in weights.load_manifest(manifest).items():
        path = weights.local_path(name, entry, manifest)
        if not os.path.isfile(path):
            continue  # not downloaded: not read to find out
        try:
            profile = (checkpoint.read(path)[1] or {}).get('slice_profile')
            if profile:
                configs[name] = ThroughPlaneConfig.from_dict(profile)
        except (MRSRUserError, ValueError, TypeError, OSError):
            continue
    return configs


def shipped_models_fitting(acquisition, manifest=None, tolerance=GEOMETRY_TOLERANCE):
    """Names of the manifest's through-plane weights (present on disk) trained for ``acquisition``."""
    configs = _shipped_configs(os.path.abspath(manifest or weights.manifest_path()))
    return sorted(name for name, config in configs.items() if acquisition.fits(config, tolerance))


def check_acquisition(acquisition, config, force=False, tolerance=GEOMETRY_TOLERANCE):
    """Compare an input's slice geometry with the one the model was trained for.

    Returns:
        str | None: A warning (the geometries differ and ``force`` is set; or the thickness was assumed), else None.

    Raises:
        ValueError: One line naming both geometries and the shipped models that fit the input, when they differ
            beyond ``tolerance`` and ``force`` is not set.
    """
    model = Acquisition.of_model(config)
    assumed = f'slice thickness assumed = spacing ({acquisition.spacing:.3g} mm)' if acquisition.assumed else None
    if acquisition.fits(config, tolerance):
        return assumed
    fitting = shipped_models_fitting(acquisition, tolerance=tolerance)
    text = (f'input: {acquisition}, model: {model} (tolerance {tolerance:.0%}); '
            f'shipped models that fit: {", ".join(fitting) if fitting else "none shipped fits"}')
    if not force:
        raise ValueError(f'slice geometry mismatch: {text}; --force runs it anyway')
    return f'slice geometry mismatch, run with --force: {text}'


def inplane_hf_ratio(volume, reference):
    """In-plane high-frequency energy of ``volume`` relative to ``reference`` (cubic interpolation along z of the
    same input): the ratio of the sums of squared finite differences along y and x over all slices; 1 is as much
    in-plane detail as cubic, > 1 sharper (or noisier) in-plane. (z, y, x) arrays of the same shape."""
    def energy(array):
        array = np.asarray(array, np.float64)
        return float((np.diff(array, axis=1)**2).sum() + (np.diff(array, axis=2)**2).sum())
    return energy(volume) / max(energy(reference), 1e-12)


def super_resolve_consistently(upscaler, volume, config, data_consistency=True, desc='', views=tuple(VIEWS)):
    """:func:`super_resolve_through_plane` followed by the data-consistency step
    (:func:`mrsr_plugin.data.slice_profile.enforce_data_consistency`, unless ``data_consistency`` is False) and its
    measures.

    Returns:
        tuple: ((s (z - 1) + 1, y, x) float32 output, dict ``data_consistency`` (bool),
        ``data_consistency_nrmse`` (of the output written), ``network_nrmse`` (of the network's output, before the
        step), ``inplane_hf_ratio`` (of the output, :func:`inplane_hf_ratio` against cubic)).
    """
    out = super_resolve_through_plane(upscaler, volume, config.scale, views, desc)
    network_nrmse = consistency_nrmse(out, volume, config)
    if data_consistency:
        out = enforce_data_consistency(out, volume, config)
    return out, {'data_consistency': bool(data_consistency),
                 'data_consistency_nrmse': consistency_nrmse(out, volume, config), 'network_nrmse': network_nrmse,
                 'inplane_hf_ratio': inplane_hf_ratio(out, interpolate_slices(volume, config.scale))}
