"""Super-resolve real MR scans with a trained generator: DICOM -> new DICOM series, PNG/TIFF -> PNG.

    python scripts/inference.py -i ~/tcia/PROSTATEx -o results/sr -opt options/train_mrdab_x2.yml \
        -w experiments/MRDAB_GAN_x2/models/net_g_latest.pth

Intensities, per input series (or per folder of same-size images): normalised as the training data were
(:func:`mrsr_plugin.data.prepare.normalise`, by default the 0.5 / 99.5 percentile window) so that the window maps
to [0, 1]. The network sees the slices clipped to [0, 1], the range it was trained on; what the clip removes (the
intensities above and below the window: bright fluid, the bladder on T2) is upsampled bilinearly and added to the
network's output, itself clipped to [0, 1], so no intensity of the source is lost (:meth:`Upscaler.batches`). The
result is mapped back to ``low + y * (high - low)`` in modality units, then through the inverse
RescaleSlope/Intercept (and MONOCHROME1 inversion) to stored values, rounded and clipped to the source's BitsStored
range and dtype.

Geometry of a derived slice at scale s. PixelSpacing is [dr, dc]: dr between rows, along the column direction
Y = ImageOrientationPatient[3:]; dc between columns, along the row direction X = ImageOrientationPatient[:3]. Pixel
(row i, column j) is centred at P + j * dc * X + i * dr * Y, and the slice extends half a pixel beyond the outer
centres. The new grid keeps those outer edges: spacing [dr / s, dc / s], Rows and Columns times s, and first pixel
centre ``P' = P - (s - 1) / (2 s) * (dc * X + dr * Y)``; each source pixel is covered by the s x s new pixels centred
on it, as pixel shuffle and bicubic down-sampling assume.

Output: ``OUT/<SeriesDescription>_SRx<s>_<8 hex digits of the source SeriesInstanceUID's SHA-1>/IM0001.dcm ...``
per DICOM series (``png/0001.png ...`` slices too with --png), ``OUT/<input name>_SRx<s>/<relative path>.png`` for
image input. One output file per input file: multi-frame (enhanced) files stay multi-frame, their per-frame
functional groups updated like a classic header. Each folder is written as a hidden sibling and renamed into place
(a killed run's leftovers are removed by the next run). The output DICOM keeps the source's patient, study and frame
of reference identifiers by design, so that it stays in its study: it is patient data like its source. A derived
series has a new SeriesInstanceUID and SeriesNumber (:func:`derived_series_number`: the source's + 1000 * s), each
of its files a new SOPInstanceUID.

Bad input never costs a good series: files the scan rejects and series that fail to load or convert are skipped
with their reason, printed and listed in ``OUT/mrsr-infer-report.json`` (replaced by each run; paths relative to the
input), and the other series go on. An error that stops the run (a full disk, a refused checkpoint, an existing
output without --overwrite) is one line naming the file, exit status 2.
"""
import argparse
import copy
import functools
import hashlib
import inspect
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass

import numpy as np
import pydicom
import torch
import yaml
from basicsr.archs import build_network
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from mrsr_plugin.compat import MRSRUserError, load_checkpoint
from mrsr_plugin.data.dicom_io import (IMAGE_EXTENSIONS, DicomInputError, Series, Skipped, build_series,
                                       describe_skipped, frame_attribute, functional_group, read_header, read_image,
                                       load_series, read_image_folder, scan_dicom_tree)
from mrsr_plugin.data.mr_image import encode_png, quantize
from mrsr_plugin.data.prepare import normalise
from mrsr_plugin.entry import guarded
from mrsr_plugin.fsutil import describe_os_error, replace_file, write_atomically
from mrsr_plugin.speed import SpeedOptions, evaluation_network
from mrsr_plugin.version import __version__
from mrsr_plugin.weights import resolve as resolve_weights

PROBE_SIZE = 16  # side of the zero input that measures the network's scale and output channels
REPORT_NAME = 'mrsr-infer-report.json'  # in the output folder: what was produced, what was skipped and why
# elements that describe the source's pixels or grid and no longer fit: min/max values, padding, icon, signatures
REMOVED_KEYWORDS = ('SmallestImagePixelValue', 'LargestImagePixelValue', 'SmallestPixelValueInSeries',
                    'LargestPixelValueInSeries', 'PixelPaddingValue', 'PixelPaddingRangeLimit', 'IconImageSequence',
                    'DigitalSignaturesSequence', 'MACParametersSequence', 'ExtendedOffsetTable',
                    'ExtendedOffsetTableLengths')
DTYPES = {(8, 0): np.uint8, (8, 1): np.int8, (16, 0): np.uint16, (16, 1): np.int16}  # (BitsAllocated, PixelRep.)


@dataclass
class Job:
    """One output folder: a DICOM series, or the PNG/TIFF images of the input."""
    name: str  # output folder name
    label: str  # what the summary and the progress bar call it
    series: Series | None = None
    images: list | None = None  # (relative name without extension, (H, W) uint8 or uint16) pairs


# --- network -------------------------------------------------------------------------------------------------------


def _first_line(err):
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _read_network_options(opt_path, arch_args):
    """-opt file or --arch-args JSON -> (network_g dict, the option file's top-level scale or None, source name)."""
    if opt_path is None:
        try:
            opt = {'network_g': json.loads(arch_args)}
        except json.JSONDecodeError as err:
            raise MRSRUserError(f'--arch-args: not valid JSON ({err})') from err
        source = '--arch-args'
    else:
        try:
            with open(opt_path) as f:
                opt = yaml.safe_load(f)
        except OSError as err:
            raise MRSRUserError(f'{opt_path}: cannot read option file ({err.strerror or err})') from err
        except yaml.YAMLError as err:
            raise MRSRUserError(f'{opt_path}: not a YAML option file ({_first_line(err)})') from err
        source = opt_path
    network_g = opt.get('network_g') if isinstance(opt, dict) else None
    if not isinstance(network_g, dict) or 'type' not in network_g:
        raise MRSRUserError(f'{source}: no network_g with a type')
    return network_g, opt.get('scale'), source


def _read_state_dict(weights, param_key):
    """BasicSR checkpoint -> state dict: ``param_key``, else params_ema if present, else params, else the file
    itself when it is a bare state dict; the ``module.`` prefix of DDP checkpoints is dropped."""
    checkpoint = load_checkpoint(weights)
    if not isinstance(checkpoint, dict):
        raise MRSRUserError(f'{weights}: not a BasicSR checkpoint (a {type(checkpoint).__name__}, not a dict)')
    if param_key is None:
        param_key = next((k for k in ('params_ema', 'params') if k in checkpoint), None)
    if param_key is None and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state = checkpoint
    elif param_key in checkpoint and isinstance(checkpoint[param_key], dict):
        state = checkpoint[param_key]
    else:
        raise MRSRUserError(f'{weights}: no weights under {param_key or "params_ema or params"} '
                            f'(keys: {", ".join(map(str, list(checkpoint)[:5]))})')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


def _listed(keys, limit=3):
    keys = list(keys)
    return ', '.join(keys[:limit]) + (f' (+{len(keys) - limit} more)' if len(keys) > limit else '')


def _check_state_dict(net, state, weights, source, arch):
    """Raise MRSRUserError naming the first missing / unexpected keys and shape mismatches, if any."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k, v in expected.items() if k in state and state[k].shape != v.shape]
    found = {
        'missing keys': missing,
        'unexpected keys': unexpected,
        'shape mismatches (checkpoint vs network)':
        [f'{k} {list(state[k].shape)} vs {list(expected[k].shape)}' for k in reshaped]
    }
    problems = [f'{name}: {_listed(keys)}' for name, keys in found.items() if keys]
    if problems:
        hint = ('; only the upsampling layers differ: was it trained for another scale?'
                if all('upsample' in k for k in missing + unexpected + reshaped) else '')
        raise MRSRUserError(f'{weights} does not fit network_g ({arch}) of {source}: {"; ".join(problems)}{hint}')


class Upscaler:
    """A generator ready for inference on normalised slices, in batches and optionally in tiles.

    Tiling: the slice is cut into a grid of at most ``tile`` x ``tile`` pixels (near-equal tiles); each runs with
    ``overlap`` pixels of context on every side (fewer at the slice border, where untiled inference sees the same
    zero padding) and only its own part of the output is kept, so neighbouring windows overlap by 2 * overlap and
    the kept parts abut. For a fully convolutional network whose receptive-field radius (in input pixels) is at
    most ``overlap``, every kept pixel sees exactly the input it sees untiled, so the result equals untiled
    inference up to float rounding and no blending is needed; networks with global pooling (MRDABNet's PCAM / DPAM
    channel attention) see each window's statistics, so tiles differ slightly from an untiled run.

    Args:
        net (nn.Module): (B, C_in, H, W) -> (B, C_out, s*H, s*W), C_in and C_out 1 or 3.
        device (torch.device): Where the network runs.
        in_ch (int): Input channels; None: those of the first convolution. Default: None.
        precision (str): 'fp32', or the autocast dtype 'bf16' or 'fp16'. Default: 'fp32'.
        tile (int): Tile size in input pixels; 0: whole slices. Default: 0.
        overlap (int): Context pixels around each tile. Default: 32.
        batch (int): Slices per forward pass. Default: 4.
        channels_last (bool): Network and input in torch.channels_last. Default: True.
        compile (bool): torch.compile the network. Default: False.
        reparameterize (str): 'none', 'fold' or 'merge' for networks that offer it (MRDABNet). Default: 'fold'.
        keep_freed_memory (bool): On a CPU, :func:`mrsr_plugin.speed.keep_freed_memory`. Default: True.

    The network runs as :func:`mrsr_plugin.speed.evaluation_network` makes it from ``net``: a copy, ``net`` itself
    is left as it is.
    """

    def __init__(self, net, device, in_ch=None, precision='fp32', tile=0, overlap=32, batch=4, channels_last=True,
                 compile=False, reparameterize='fold', keep_freed_memory=True):
        self.speed = SpeedOptions(channels_last=channels_last, amp=None if precision == 'fp32' else precision,
                                  compile=compile, reparameterize=reparameterize, keep_freed_memory=keep_freed_memory)
        self.speed.configure_allocator(device)
        self.in_ch = in_ch or next((m.in_channels for m in net.modules() if isinstance(m, nn.Conv2d)), 1)
        self.net = evaluation_network(net, self.speed, device)
        self.device, self.tile, self.overlap, self.batch = device, tile, overlap, batch
        if self.in_ch not in (1, 3):
            raise MRSRUserError(f'the network takes {self.in_ch} input channels; 1 or 3 are supported')
        with torch.no_grad():
            probe = self.net(torch.zeros(1, self.in_ch, PROBE_SIZE, PROBE_SIZE, device=device)).shape
        if probe[1] not in (1, 3):
            raise MRSRUserError(f'the network returns {probe[1]} channels; 1 or 3 are supported')
        if probe[-2] != probe[-1] or probe[-1] % PROBE_SIZE:
            raise MRSRUserError(f'the network maps {PROBE_SIZE}x{PROBE_SIZE} to {probe[-2]}x{probe[-1]}, not an '
                                'integer upscale')
        self.scale = probe[-1] // PROBE_SIZE

    @torch.no_grad()
    def forward(self, x):
        """(B, 1, h, w) float32 on the CPU -> (B, 1, s*h, s*w) float32 on the CPU, not clipped.

        A 1-channel slice is repeated for 3-channel networks; 3 output channels are averaged.
        """
        x = x.to(self.device).expand(-1, self.in_ch, -1, -1).contiguous(memory_format=self.speed.memory_format)
        with self.speed.autocast(self.device):
            y = self.net(x)
        return y.float().mean(dim=1, keepdim=True).cpu()

    def tiled(self, x):
        """:meth:`forward` over tiles with context (see the class docstring); same shapes."""
        h, w = x.shape[-2:]
        if self.tile <= 0 or (h <= self.tile and w <= self.tile):
            return self.forward(x)
        s, pad = self.scale, self.overlap
        rows, cols = (np.linspace(0, n, math.ceil(n / self.tile) + 1).round().astype(int) for n in (h, w))
        out = torch.empty(x.shape[0], 1, s * h, s * w)
        for y0, y1 in zip(rows[:-1], rows[1:]):
            for x0, x1 in zip(cols[:-1], cols[1:]):
                wy0, wx0 = max(y0 - pad, 0), max(x0 - pad, 0)
                window = self.forward(x[..., wy0:min(y1 + pad, h), wx0:min(x1 + pad, w)])
                out[..., s * y0:s * y1, s * x0:s * x1] = window[..., s * (y0 - wy0):s * (y1 - wy0),
                                                                s * (x0 - wx0):s * (x1 - wx0)]
        return out

    def batches(self, slices, desc='', quiet=False):
        """Yield the super-resolved slices in order, a batch at a time.

        The network sees the slices clipped to [0, 1]; what the clip removes (``x - clip(x, 0, 1)``, the
        intensities outside the normalisation window) is upsampled bilinearly (align_corners=False, the grid of
        the network's output) and added to the network's output clipped to [0, 1], so none of it is lost.

        Args:
            slices (ndarray): (N, H, W), normalised: the window is [0, 1], values outside it are kept.

        Yields:
            ndarray: float32 (B, s*H, s*W); in [0, 1] where the slices are.
        """
        with tqdm(total=len(slices), desc=desc, unit='slice', disable=quiet, file=sys.stderr) as bar:
            for start in range(0, len(slices), self.batch):
                x = torch.from_numpy(np.asarray(slices[start:start + self.batch], np.float32))[:, None]
                inside = x.clamp(0, 1)
                outside = F.interpolate(x - inside, scale_factor=self.scale, mode='bilinear', align_corners=False)
                yield (self.tiled(inside).clamp_(0, 1) + outside)[:, 0].numpy()
                bar.update(len(x))


def input_channels(net, network_g):
    """network_g's num_in_ch, else the default of ``net``'s class, else None (:class:`Upscaler` then asks the first
    convolution)."""
    defaults = inspect.signature(type(net)).parameters
    return network_g.get('num_in_ch', defaults['num_in_ch'].default if 'num_in_ch' in defaults else None)


def load_generator(weights, opt_path=None, arch_args=None, param_key=None, scale=None, **upscaler_args):
    """Build network_g, load the checkpoint strictly and check the scale.

    Args:
        weights (str): BasicSR checkpoint, or a name of the weights manifest (:func:`mrsr_plugin.weights.resolve`).
        opt_path (str): Option file whose network_g builds the network; or
        arch_args (str): network_g as JSON; neither: the manifest entry's network_g (weights given by name).
        param_key (str): Checkpoint key; default params_ema if present, else params.
        scale (int): Expected scale; default network_g.upscale, else the option file's scale.
        upscaler_args: :class:`Upscaler`'s arguments but in_ch, which is network_g's
            num_in_ch (or the network's default).

    Returns:
        tuple[Upscaler, str]: The generator and its network type.
    """
    weights, entry = resolve_weights(weights)
    if opt_path is None and arch_args is None:
        if entry is None:
            raise MRSRUserError(f'{weights}: a checkpoint file needs -opt or --arch-args for its network (weights '
                                'given by name take network_g from the manifest)')
        arch_args = json.dumps(entry['network_g'])
    network_g, opt_scale, source = _read_network_options(opt_path, arch_args)
    arch = network_g['type']
    try:
        net = build_network(copy.deepcopy(network_g))
    except (KeyError, TypeError, ValueError) as err:
        raise MRSRUserError(f'{source}: cannot build network_g {arch} ({_first_line(err)})') from err
    state = _read_state_dict(weights, param_key)
    _check_state_dict(net, state, weights, source, arch)
    net.load_state_dict(state, strict=True)
    upscaler = Upscaler(net, in_ch=input_channels(net, network_g), **upscaler_args)
    if scale:
        expected, said_by = scale, '--scale'
    elif network_g.get('upscale'):
        expected, said_by = network_g['upscale'], f'network_g.upscale of {source}'
    else:
        expected, said_by = opt_scale, f'scale of {source}'
    if expected and expected != upscaler.scale:
        raise MRSRUserError(f'{weights}: the network upscales x{upscaler.scale}, but {said_by} says x{expected}')
    return upscaler, arch


# --- intensities -----------------------------------------------------------------------------------------------------


def stored_range(ds):
    """(lowest, highest) stored value that BitsStored and PixelRepresentation allow."""
    bits = int(ds.BitsStored)
    return (-2**(bits - 1), 2**(bits - 1) - 1) if ds.get('PixelRepresentation') == 1 else (0, 2**bits - 1)


def to_stored(values, ds, frame=0):
    """Modality values of ``frame`` of ``ds`` -> stored pixel values: the inverse of ``load_series``.

    Inverse RescaleSlope/Intercept (per frame in enhanced files), MONOCHROME1 inverted back over the stored range,
    rounded, clipped to the BitsStored range and cast to the dtype of BitsAllocated / PixelRepresentation.

    Args:
        values (ndarray): (H, W) in modality units.
        ds (Dataset): The source file's header.
        frame (int): Frame index, for enhanced multi-frame files. Default: 0.

    Returns:
        ndarray: (H, W) uint8, int8, uint16 or int16.
    """
    dtype = DTYPES.get((int(ds.BitsAllocated), int(ds.get('PixelRepresentation') or 0)))
    if dtype is None:
        raise DicomInputError(f'{ds.filename}: {ds.BitsAllocated}-bit pixels are not supported (8 or 16 bits)')
    if ds.get('ModalityLUTSequence'):
        raise DicomInputError(f'{ds.filename}: a Modality LUT Sequence cannot be inverted; only RescaleSlope/'
                              'RescaleIntercept are supported')
    item = functional_group(ds, frame, 'PixelValueTransformationSequence') or ds
    stored = np.asarray(values, np.float64)
    if 'RescaleSlope' in item and 'RescaleIntercept' in item:  # as pydicom's apply_modality_lut
        stored = (stored - float(item.RescaleIntercept)) / float(item.RescaleSlope)
    lowest, highest = stored_range(ds)
    if ds.get('PhotometricInterpretation') == 'MONOCHROME1':
        stored = (lowest + highest) - stored
    return np.clip(np.round(stored), lowest, highest).astype(dtype)


# --- DICOM output ----------------------------------------------------------------------------------------------------


def _derived(image_type):
    """ImageType / FrameType -> DERIVED\\SECONDARY followed by the source's values after the first two."""
    values = [image_type] if isinstance(image_type, str) else list(image_type or [])
    return ['DERIVED', 'SECONDARY', *values[2:]]


def _ds_values(values):
    return [DSfloat(float(v), auto_format=True) for v in values]


def update_geometry(ds, scale):
    """Divide PixelSpacing by ``scale`` and move ImagePositionPatient to the new first pixel centre (see the module
    docstring), in the header and in the shared / per-frame functional groups of enhanced files.

    Positions without both ImageOrientationPatient and PixelSpacing stay as they are.
    """
    positions, spacings = {}, {}
    for frame in range(int(ds.get('NumberOfFrames') or 1)):
        position = functional_group(ds, frame, 'PlanePositionSequence') or ds
        measures = functional_group(ds, frame, 'PixelMeasuresSequence') or ds
        orientation = frame_attribute(ds, frame, 'PlaneOrientationSequence', 'ImageOrientationPatient')
        if measures.get('PixelSpacing'):
            spacings[id(measures)] = measures
            if position.get('ImagePositionPatient') and orientation and id(position) not in positions:
                row_dir, col_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
                row_spacing, col_spacing = (float(v) for v in measures.PixelSpacing)
                shift = (scale - 1) / (2 * scale) * (col_spacing * row_dir + row_spacing * col_dir)
                positions[id(position)] = position, np.asarray(position.ImagePositionPatient, float) - shift
    for item, new_position in positions.values():
        item.ImagePositionPatient = _ds_values(new_position)
    for item in spacings.values():
        item.PixelSpacing = _ds_values(float(v) / scale for v in item.PixelSpacing)


def derived_series_number(number, scale):
    """SeriesNumber of the x``scale`` series derived from series ``number`` (None or '' if it has none): number +
    1000 * scale, so that the source and its x2, x3 and x4 series differ; 1000 * scale where the source has none or
    the sum would not fit in an IS (a signed 32-bit integer)."""
    derived = int(number or 0) + 1000 * scale
    return derived if derived < 2**31 else 1000 * scale


def derive_dataset(ds, values, scale, series_uid, description, derivation):
    """The derived file of one source file.

    Args:
        ds (Dataset): The source file's header, read without pixel data; modified in place and returned.
        values (ndarray): (F, s*H, s*W) super-resolved frames in modality units.
        scale (int): Upscale factor.
        series_uid (str): SeriesInstanceUID of the new series.
        description (str): Its SeriesDescription.
        derivation (str): DerivationDescription.

    Returns:
        Dataset: With Explicit VR Little Endian file meta, a new SOPInstanceUID (also the file meta's
        MediaStorageSOPInstanceUID), SeriesNumber :func:`derived_series_number`, the source's bit layout.
    """
    stored = np.stack([to_stored(frame_values, ds, i) for i, frame_values in enumerate(values)])
    source_ref = Dataset()
    source_ref.ReferencedSOPClassUID, source_ref.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    for tag in list(ds.keys()):  # overlays (60xx) and curves (50xx) lie on the source grid
        if (0x6000 <= tag.group <= 0x60FF or 0x5000 <= tag.group <= 0x50FF) and tag.group % 2 == 0:
            del ds[tag]
    for keyword in REMOVED_KEYWORDS:
        if keyword in ds:
            delattr(ds, keyword)
    update_geometry(ds, scale)
    ds.ImageType = _derived(ds.get('ImageType'))
    for groups in ('SharedFunctionalGroupsSequence', 'PerFrameFunctionalGroupsSequence'):
        for group in ds.get(groups) or []:
            for frame_type in group.get('MRImageFrameTypeSequence') or []:
                frame_type.FrameType = _derived(frame_type.get('FrameType'))
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = derived_series_number(ds.get('SeriesNumber'), scale)
    ds.SeriesDescription = description
    ds.DerivationDescription = derivation
    ds.SourceImageSequence = [source_ref]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    # a 3-D array keeps NumberOfFrames even for one frame, as enhanced files need
    ds.set_pixel_data(stored if 'NumberOfFrames' in ds else stored[0], ds.PhotometricInterpretation, int(ds.BitsStored),
                      generate_instance_uid=False)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _sanitize(text, limit=48):
    return re.sub(r'[^A-Za-z0-9.+-]+', '_', text).strip('_.')[:limit]


def write_dicom_job(folder, job, upscaler, args, weights_name, arch):
    """Load, normalise and super-resolve one series; write its files into ``folder`` as they complete."""
    series, s = job.series, upscaler.scale
    volume = load_series(series)
    try:
        slices, (low, high) = normalise(volume, args.normalize, args.percentiles, clip=False)
    except ValueError as err:
        raise DicomInputError(f'{series.files[0]}: {err}') from err
    suffix = f' SRx{s}'
    description = series.description[:64 - len(suffix)] + suffix  # LO: 64 characters
    window = f'{args.normalize} {args.percentiles[0]:g}/{args.percentiles[1]:g}' if (
        args.normalize == 'percentile') else args.normalize
    derivation = (f'Super-resolution x{s}: {arch}, weights {weights_name}, mrsr_plugin {__version__}; intensities '
                  f'normalised to the window [{low:.6g}, {high:.6g}] ({window}), super-resolved and mapped back; '
                  'intensities outside the window interpolated bilinearly')
    series_uid = generate_uid()
    headers = (pydicom.dcmread(path, stop_before_pixels=True) for path in series.files)
    src, number, done, pending = next(headers), 1, 0, []
    if args.png:
        os.makedirs(os.path.join(folder, 'png'))
    for batch in upscaler.batches(slices, job.label, args.quiet):
        pending.extend(batch)
        if args.png:
            for i, img in enumerate(batch, done + 1):
                with open(os.path.join(folder, 'png', f'{i:04d}.png'), 'wb') as f:
                    f.write(encode_png(quantize(img, args.png_bit_depth or 16)))
        done += len(batch)
        while src is not None and len(pending) >= int(src.get('NumberOfFrames') or 1):
            frames = int(src.get('NumberOfFrames') or 1)
            values = low + np.stack(pending[:frames]).astype(np.float64) * (high - low)
            ds = derive_dataset(src, values, s, series_uid, description, derivation)
            pydicom.dcmwrite(os.path.join(folder, f'IM{number:04d}.dcm'), ds, enforce_file_format=True)
            del pending[:frames]
            src, number = next(headers, None), number + 1


def write_image_job(folder, job, upscaler, args):
    """Super-resolve PNG/TIFF slices, normalised per folder, size and bit depth; write PNGs into ``folder``."""
    groups = {}
    for name, img in job.images:
        groups.setdefault((os.path.dirname(name), img.shape, img.dtype.str), []).append((name, img))
    for members in groups.values():
        peak = np.iinfo(members[0][1].dtype).max
        try:
            slices, (low, high) = normalise(np.stack([img for _, img in members]).astype(np.float32),
                                            args.normalize, args.percentiles, peak, clip=False)
        except ValueError as err:
            raise MRSRUserError(f'{members[0][0]}: {err}') from err
        bit_depth = args.png_bit_depth or (8 if peak == 255 else 16)
        names = iter(name for name, _ in members)
        for batch in upscaler.batches(slices, job.label, args.quiet):
            for img in batch:
                path = os.path.join(folder, f'{next(names)}.png')
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, 'wb') as f:
                    f.write(encode_png(quantize((low + img.astype(np.float64) * (high - low)) / peak, bit_depth)))


# --- inputs and outputs ----------------------------------------------------------------------------------------------


def _read_image(path):
    """One PNG/TIFF file -> (H, W) uint8 or uint16."""
    img = read_image(path)
    if isinstance(img, str):
        raise MRSRUserError(f'{path}: {img}')
    return img


def find_jobs(path, scale, quiet=False):
    """Input file or folder -> (list of :class:`Job`, list of :class:`Skipped`): one job per MR series, or one for
    all PNG/TIFF slices of a folder without MR series, and the files left out of a folder with their reasons."""
    stem = os.path.splitext(os.path.basename(os.path.abspath(path)))[0]
    image_job_name = f'{_sanitize(stem) or "images"}_SRx{scale}'
    if os.path.isfile(path) and path.lower().endswith(IMAGE_EXTENSIONS):
        return [Job(image_job_name, stem, images=[(stem, _read_image(path))])], []
    if os.path.isfile(path):
        header = read_header(path)
        if isinstance(header, str):
            raise DicomInputError(path, header)
        series, skipped = [build_series([header])], []
    elif os.path.isdir(path):
        series, skipped = scan_dicom_tree(path, progress=not quiet)
    else:
        raise MRSRUserError(f'{path}: no such file or folder')
    if series:
        return [
            Job(f'{_sanitize(s.description) or "series"}_SRx{scale}_{hashlib.sha1(s.uid.encode()).hexdigest()[:8]}',
                s.description or s.uid, series=s) for s in series
        ], skipped
    images, skipped_images = read_image_folder(path)
    if not images:
        for line in describe_skipped(skipped + skipped_images, path):
            print(line, file=sys.stderr)
        raise MRSRUserError(f'{path}: no MR DICOM series and no PNG/TIFF slices found '
                            f'({len(skipped + skipped_images)} files skipped)')
    # images are 'not DICOM' to the scan: keep what it said about other files
    skipped = [s for s in skipped if not s.path.lower().endswith(IMAGE_EXTENSIONS)] + skipped_images
    return [Job(image_job_name, stem, images=images)], skipped


def write_report(output, args, produced, skipped):
    """``output/mrsr-infer-report.json``: the series produced and the inputs skipped with their reasons, paths
    relative to the input folder; replaced by each run into ``output``."""
    root = args.input if os.path.isdir(args.input) else os.path.dirname(os.path.abspath(args.input))
    prefix = os.path.join(os.path.abspath(root), '')

    def relative(text):
        return text.replace(prefix, '').replace(os.path.join(root, ''), '')

    report = {
        'tool': 'mrsr-infer', 'version': __version__, 'weights': os.path.basename(args.weights),
        'produced': produced,
        'skipped': [{'path': relative(os.path.abspath(s.path)), 'reason': relative(s.reason)} for s in skipped],
    }
    path = os.path.join(output, REPORT_NAME)
    replace_file(path, json.dumps(report, indent=1))
    return path


def check_output(path):
    """Absolute output folder, after checking that it or its parent exists and is writable."""
    out = os.path.abspath(path)
    if os.path.exists(out) and not os.path.isdir(out):
        raise MRSRUserError(f'{out}: exists and is not a folder')
    target = out if os.path.isdir(out) else os.path.dirname(out)
    if not os.path.isdir(target):
        raise MRSRUserError(f'{out}: parent {target} is not an existing folder')
    if not os.access(target, os.W_OK | os.X_OK):
        raise MRSRUserError(f'{target}: no write permission')
    return out


def _device(name):
    if name == 'cuda' and not torch.cuda.is_available():
        raise MRSRUserError('--device cuda: no CUDA device available')
    return torch.device('cuda' if name != 'cpu' and torch.cuda.is_available() else 'cpu')


def infer(args):
    """Run every job of the command line; returns the summary lines (per output folder and total)."""
    if args.tile < 0 or args.tile_overlap < 0 or args.batch < 1:
        raise MRSRUserError('--tile and --tile-overlap must be >= 0 and --batch >= 1')
    output = check_output(args.output)
    device = _device(args.device)
    upscaler, arch = load_generator(args.weights, args.opt, args.arch_args, args.param_key, args.scale,
                                    device=device, precision=args.precision, tile=args.tile,
                                    overlap=args.tile_overlap, batch=args.batch, channels_last=args.channels_last,
                                    compile=args.compile, reparameterize=args.reparameterize,
                                    keep_freed_memory=args.keep_freed_memory)
    jobs, skipped = find_jobs(args.input, upscaler.scale, args.quiet)
    for job in jobs:
        if os.path.exists(os.path.join(output, job.name)) and not args.overwrite:
            raise MRSRUserError(f'{os.path.join(output, job.name)} exists; pass --overwrite to replace it')
    root = args.input if os.path.isdir(args.input) else os.path.dirname(args.input)
    if not args.quiet:
        for line in describe_skipped(skipped, root) + [f'warning: {_relative_folder(job.series, root)}: {note}'
                                                       for job in jobs if job.series for note in job.series.warnings]:
            print(line, file=sys.stderr)
    created = not os.path.exists(output)
    os.makedirs(output, exist_ok=True)
    summary, produced, start, s = [], [], time.perf_counter(), upscaler.scale
    try:
        for job in jobs:
            job_start = time.perf_counter()
            if job.series is not None:
                write = functools.partial(write_dicom_job, job=job, upscaler=upscaler, args=args,
                                          weights_name=os.path.basename(args.weights), arch=arch)
                (h, w), count = (job.series.rows, job.series.columns), job.series.num_slices
            else:
                write = functools.partial(write_image_job, job=job, upscaler=upscaler, args=args)
                (h, w), count = job.images[0][1].shape, len(job.images)
            try:
                final = write_atomically(output, job.name, args.overwrite, write)
            except (DicomInputError, InvalidDicomError) as err:  # this series only: the others go on
                path, reason = _file_and_reason(err, job.series.files)
                skipped.append(Skipped(path, f'{reason}; its series ({len(job.series.files)} files) is skipped'))
                for line in describe_skipped(skipped[-1:], root) if not args.quiet else []:
                    print(line, file=sys.stderr)
                continue
            except torch.cuda.OutOfMemoryError as err:
                raise MRSRUserError(f'out of GPU memory ({_first_line(err)}); lower --batch or use --tile') from err
            except OSError as err:  # a full disk, a vanished input: the run cannot go on
                raise MRSRUserError(describe_os_error(err, os.path.join(output, job.name))) from err
            produced.append({'output': job.name, 'label': job.label, 'slices': count,
                             'source': _relative_folder(job.series, root) if job.series else '.',
                             'warnings': job.series.warnings if job.series else []})
            summary.append(f'{job.label}: {count} slices {h}x{w} -> {s * h}x{s * w} in '
                           f'{time.perf_counter() - job_start:.1f} s -> {final}')
        if not produced:
            for line in describe_skipped(skipped, root) if args.quiet else []:
                print(line, file=sys.stderr)
            raise MRSRUserError(f'{args.input}: none of the {len(jobs)} series could be super-resolved; reasons above')
    except BaseException:
        if created and not os.listdir(output):
            os.rmdir(output)
        raise
    report = write_report(output, args, produced, skipped)
    fast = ', '.join(['channels_last'] * args.channels_last + ['compiled'] * args.compile +
                     [f'reparameterize {args.reparameterize}'])
    summary.append(f'total: {len(produced)} output folders in {time.perf_counter() - start:.1f} s on {device.type} '
                   f'({args.precision}, {fast}); {len(skipped)} inputs skipped, see {report}')
    return summary


def _file_and_reason(err, files):
    """(file, reason) of an error loading or converting one of ``files``; a message 'FILE: reason' is split."""
    if not isinstance(err, DicomInputError):
        return files[0], f'cannot read DICOM file ({_first_line(err)})'
    if err.path is not None:
        return err.path, err.reason
    head, _, rest = err.reason.partition(': ')
    return (head, rest) if head in files else (files[0], err.reason)


def _relative_folder(series, root):
    """The folder of a series' first file, relative to the input folder."""
    return os.path.relpath(os.path.dirname(os.path.abspath(series.files[0])), os.path.abspath(root or '.'))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the None and False of options that have none."""

    def _get_help_string(self, action):
        return action.help if action.default is None or action.default is False else super()._get_help_string(action)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog='mrsr-infer', formatter_class=_HelpFormatter,
        description='Super-resolve real MR scans with a trained BasicSR generator: DICOM files, series or TCIA trees '
        '-> one new DICOM series each (same physical extent, DERIVED, new UIDs); PNG/TIFF slices -> PNG.')
    p.add_argument('-i', '--input', required=True,
                   help='DICOM file, series folder or TCIA-style tree (one output series per MR series); or a PNG/TIFF '
                   'file or folder')
    p.add_argument('-o', '--output', required=True, help='folder that receives one sub-folder per series')
    p.add_argument('-w', '--weights', required=True,
                   help='BasicSR checkpoint (.pth with params and/or params_ema), or a name of the weights manifest '
                   '(python -m mrsr_plugin.weights lists them; downloaded once and checked by sha256)')
    net = p.add_mutually_exclusive_group()
    net.add_argument('-opt', help='BasicSR option file whose network_g builds the network (default for weights given '
                     'by name: the manifest\'s network_g)')
    net.add_argument('--arch-args', help='network_g as JSON instead, e.g. \'{"type": "MRDABNet", "num_in_ch": 1, '
                     '"num_out_ch": 1, "upscale": 2}\'')
    p.add_argument('--param-key', help='checkpoint key of the weights (default: params_ema if present, else params)')
    p.add_argument('--scale', type=int,
                   help='expected upscale, checked against the network (default: network_g.upscale, else scale)')
    p.add_argument('--normalize', default='percentile', choices=['percentile', 'minmax', 'none'],
                   help='per-series intensity window, as used for the training data; none: divide by the bit depth '
                   '(PNG/TIFF input only)')
    p.add_argument('--percentiles', type=float, nargs=2, default=[0.5, 99.5], help='window of --normalize percentile')
    p.add_argument('--png', action='store_true',
                   help='DICOM input: also write the normalised output slices as PNG (png/ in each series folder; the '
                   'window fills the PNG range, intensities outside it are clipped there, not in the DICOM)')
    p.add_argument('--png-bit-depth', type=int, choices=[8, 16],
                   help='PNG output bit depth (default: the input image\'s; 16 for DICOM input)')
    p.add_argument('--tile', type=int, default=0, help='tile size in input pixels for large slices; 0: whole slices')
    p.add_argument('--tile-overlap', type=int, default=32,
                   help='context pixels around each tile; tiled equals untiled when the receptive-field radius of a '
                   'fully convolutional network is at most this')
    p.add_argument('--batch', type=int, default=4, help='slices per forward pass')
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'], help='auto: CUDA when available')
    p.add_argument('--precision', default='fp32', choices=['fp32', 'fp16', 'bf16'],
                   help='fp32, or autocast in bf16 or fp16 (changes the arithmetic; see README, Speed)')
    p.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=True,
                   help='run the network in torch.channels_last memory format')
    p.add_argument('--compile', action='store_true', help='torch.compile the network (pays off on long runs)')
    p.add_argument('--reparameterize', default='fold', choices=['none', 'fold', 'merge'],
                   help='MRDABNet: fold SAM\'s convolutions and the local residuals; merge also each multi-scale '
                   'group into one convolution (exact; slower on a CPU)')
    p.add_argument('--keep-freed-memory', action=argparse.BooleanOptionalAction, default=True,
                   help='CPU with glibc: keep freed memory for reuse instead of page-faulting fresh memory for every '
                   'large tensor (faster; the process keeps its peak memory)')
    p.add_argument('--overwrite', action='store_true', help='replace existing output series folders')
    p.add_argument('-q', '--quiet', action='store_true', help='no progress bars or skipped-file notes')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    summary = guarded('mrsr-infer', infer, args)
    print('\n'.join(summary))


if __name__ == '__main__':
    main()
