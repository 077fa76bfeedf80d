"""Inference on real MR DICOMs (pydicom's MR_small*.dcm and MR_truncated.dcm; pydicom-data's emri_small.dcm and
MR-SIEMENS-DICOM-WithOverlays.dcm) and PNGs, with a tiny MRDABNet (8 features, 1 block of 1 group, growth 4,
1 channel) whose random weights are saved as a BasicSR checkpoint, and a nearest-neighbour test net that makes the
intensity mapping checkable value by value. SimpleITK, where installed, is the second DICOM reader.
"""
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pydicom
import pytest
import torch
import yaml
from basicsr.utils.registry import ARCH_REGISTRY
from conftest import run_infer, tiny_tmpfs
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from torch import nn
from torch.nn import functional as F

from mrsr_plugin.archs.mrdab_arch import MRDABNet
from mrsr_plugin.mrio.dicom import load_series, scan_dicom_tree
from mrsr_plugin.mrio.intensity import normalise
from mrsr_plugin.apps.infer.core import Upscaler
from mrsr_plugin.apps.infer.dicom import derive_dataset, derived_series_number, to_stored
from mrsr_plugin.apps.infer.run import REPORT_NAME

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(type='MRDABNet', num_in_ch=1, num_out_ch=1, num_feat=8, num_block=1, num_groups=1, growth=4, upscale=2)
ANGLE, TILT = np.radians(30), np.radians(20)
ROW_DIR = np.array([np.cos(ANGLE), np.sin(ANGLE), 0])  # oblique, so that row and column directions cannot be mixed up
COL_DIR = np.array([-np.sin(ANGLE) * np.cos(TILT), np.cos(ANGLE) * np.cos(TILT), np.sin(TILT)])
SPACING = [0.5, 0.8]  # [between rows, between columns], anisotropic so that their order matters


@ARCH_REGISTRY.register()
class NearestTestNet(nn.Module):
    """Identity-like upsampler: a 1x1 convolution set to the identity, then nearest-neighbour upsampling."""

    def __init__(self, upscale=2):
        super().__init__()
        self.upscale = upscale
        self.conv = nn.Conv2d(1, 1, 1)
        nn.init.ones_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x):
        return F.interpolate(self.conv(x), scale_factor=self.upscale, mode='nearest')


def make_model(folder, name, network_g):
    """Save a randomly initialised network as a BasicSR checkpoint plus an option file; returns both paths."""
    torch.manual_seed(0)
    net = ARCH_REGISTRY.get(network_g['type'])(**{k: v for k, v in network_g.items() if k != 'type'})
    weights, opt = os.path.join(folder, f'{name}.pth'), os.path.join(folder, f'{name}.yml')
    torch.save({'params': net.state_dict()}, weights)
    with open(opt, 'w') as f:
        yaml.safe_dump({'name': name, 'scale': network_g['upscale'], 'network_g': network_g}, f)
    return weights, opt


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp('models'))
    return {
        'x2': make_model(folder, 'x2', TINY),
        'x3': make_model(folder, 'x3', dict(TINY, upscale=3)),
        'nearest': make_model(folder, 'nearest', {'type': 'NearestTestNet', 'upscale': 2}),
    }


def data_file(name):
    """Local path of a pydicom / pydicom-data test file; skips the test where it would need a download."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f'{name} is not available offline')
    return path


def mr_small():
    return pydicom.dcmread(data_file('MR_small.dcm'))


def write_series(folder, count=3, columns=48, description='t2 oblique', **attributes):
    """``count`` slices of MR_small.dcm (cropped to 64 x ``columns``) as one new series: oblique orientation,
    SPACING, 3 mm apart along the normal; slice i holds MR_small + 100 * i. Returns the file paths in order."""
    os.makedirs(folder, exist_ok=True)
    series_uid, normal = generate_uid(), np.cross(ROW_DIR, COL_DIR)
    paths = []
    for i in range(count):
        ds = mr_small()
        ds.SeriesInstanceUID, ds.SeriesDescription, ds.InstanceNumber = series_uid, description, i + 1
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImageOrientationPatient = [round(float(v), 8) for v in (*ROW_DIR, *COL_DIR)]
        ds.ImagePositionPatient = [round(float(v), 4) for v in np.array([-80.0, -90.0, 10.0]) + 3.0 * i * normal]
        ds.PixelSpacing = SPACING
        pixels = np.ascontiguousarray(ds.pixel_array[:, :columns]) + 100 * i
        ds.Columns, ds.PixelData = columns, pixels.astype(np.int16).tobytes()
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        paths.append(os.path.join(folder, f'slice{i}.dcm'))
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def output_series(output):
    """The single output series folder under ``output`` and its files in order."""
    (name, ) = set(os.listdir(output)) - {REPORT_NAME}
    folder = os.path.join(output, name)
    return folder, sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith('.dcm'))


def corners(ds):
    """The outer corners (first and last pixel edge) of a slice in patient coordinates, mm."""
    orientation = np.asarray(ds.ImageOrientationPatient, float)
    row_dir, col_dir = orientation[:3], orientation[3:]
    dr, dc = (float(v) for v in ds.PixelSpacing)
    origin = np.asarray(ds.ImagePositionPatient, float)
    first = origin - dc / 2 * row_dir - dr / 2 * col_dir
    return first, first + ds.Columns * dc * row_dir + ds.Rows * dr * col_dir


# --- geometry, header, round trip --------------------------------------------------------------------------------


@pytest.mark.parametrize('scale', [2, 3])
def test_geometry_and_header_of_the_derived_series(tmp_path, models, scale):
    sources = write_series(str(tmp_path / 'in'))
    weights, opt = models[f'x{scale}']
    assert run_infer('-i', tmp_path / 'in', '-o', tmp_path / 'out', '-w', weights, '-opt', opt, '-q') == 0
    folder, outputs = output_series(tmp_path / 'out')
    assert os.path.basename(folder).startswith(f't2_oblique_SRx{scale}_') and len(outputs) == 3
    series_uids, sop_uids = set(), set()
    for source_path, output_path in zip(sources, outputs):
        src, out = pydicom.dcmread(source_path), pydicom.dcmread(output_path)
        assert (out.Rows, out.Columns) == (64 * scale, 48 * scale)
        np.testing.assert_allclose([float(v) for v in out.PixelSpacing], np.array(SPACING) / scale, rtol=1e-9)
        np.testing.assert_allclose(out.ImageOrientationPatient, src.ImageOrientationPatient)
        shift = (scale - 1) / (2 * scale) * (SPACING[1] * ROW_DIR + SPACING[0] * COL_DIR)
        np.testing.assert_allclose(out.ImagePositionPatient, np.asarray(src.ImagePositionPatient) - shift, atol=1e-6)
        for a, b in zip(corners(src), corners(out)):  # the outer pixel edges coincide: same physical extent
            np.testing.assert_allclose(a, b, atol=1e-6)
        assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert out.SOPClassUID == src.SOPClassUID == out.file_meta.MediaStorageSOPClassUID
        assert out.SOPInstanceUID == out.file_meta.MediaStorageSOPInstanceUID != src.SOPInstanceUID
        assert out.SeriesInstanceUID != src.SeriesInstanceUID
        assert (src.SeriesNumber, out.SeriesNumber) == (1, 1 + 1000 * scale)
        assert (out.StudyInstanceUID, out.FrameOfReferenceUID) == (src.StudyInstanceUID, src.FrameOfReferenceUID)
        assert list(out.ImageType) == ['DERIVED', 'SECONDARY', 'OTHER']
        assert out.SeriesDescription == f't2 oblique SRx{scale}'
        assert f'x{scale}' in out.DerivationDescription and os.path.basename(weights) in out.DerivationDescription
        assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        assert (out.InstanceNumber, out.PatientName, out.WindowCenter) == (src.InstanceNumber, src.PatientName,
                                                                           src.WindowCenter)
        added = {e.keyword for e in out} - {e.keyword for e in src}
        assert added == {'DerivationDescription', 'SourceImageSequence'}  # nothing new that identifies anyone
        assert 'LargestImagePixelValue' not in out and 'SmallestImagePixelValue' not in out
        assert (out.BitsAllocated, out.BitsStored, out.HighBit, out.PixelRepresentation) == (16, 16, 15, 1)
        assert out.pixel_array.dtype == np.int16 and out.pixel_array.shape == (64 * scale, 48 * scale)
        series_uids.add(out.SeriesInstanceUID)
        sop_uids.add(out.SOPInstanceUID)
    assert len(series_uids) == 1 and len(sop_uids) == 3
    (series, ), _ = scan_dicom_tree(folder)  # the output is a readable series again
    assert series.num_slices == 3 and series.files == outputs


@pytest.mark.parametrize('number, scale, derived', [(1, 2, 2001), ('7', 4, 4007), (None, 3, 3000), ('', 2, 2000),
                                                    (2**31 - 10, 2, 2000)])
def test_derived_series_number(number, scale, derived):
    assert derived_series_number(number, scale) == derived


def test_derive_dataset_sets_the_sop_instance_uid_itself(monkeypatch):
    """A new SOPInstanceUID per file, equal to the file meta's, whether or not pydicom's set_pixel_data makes one."""
    set_pixel_data = Dataset.set_pixel_data
    monkeypatch.setattr(Dataset, 'set_pixel_data', lambda ds, *args, **kwargs: set_pixel_data(
        ds, *args, **dict(kwargs, generate_instance_uid=False)))
    series_uid, source_uid = generate_uid(), mr_small().SOPInstanceUID
    uids = set()
    for _ in range(2):
        header = pydicom.dcmread(data_file('MR_small.dcm'), stop_before_pixels=True)
        out = derive_dataset(header, np.zeros((1, 128, 128)), 2, series_uid, 'derived', 'test')
        assert out.SOPInstanceUID == out.file_meta.MediaStorageSOPInstanceUID and out.SOPInstanceUID.is_valid
        uids.add(out.SOPInstanceUID)
    assert len(uids) == 2 and source_uid not in uids


@pytest.mark.parametrize('attributes', [{}, {'RescaleSlope': 2.5, 'RescaleIntercept': -100.0},
                                        {'PhotometricInterpretation': 'MONOCHROME1'}])
def test_identity_net_gives_back_the_stored_values(tmp_path, models, attributes):
    """Nearest upsampling through the whole pipeline: every s x s block holds its source pixel's stored value, and
    the output's modality values (RescaleSlope/Intercept) equal the source's."""
    sources = write_series(str(tmp_path / 'in'), count=2, **attributes)
    weights, opt = models['nearest']
    assert run_infer('-i', tmp_path / 'in', '-o', tmp_path / 'out', '-w', weights, '-opt', opt, '--percentiles', 0, 100,
                     '-q') == 0
    _, outputs = output_series(tmp_path / 'out')
    for source_path, output_path in zip(sources, outputs):
        src, out = pydicom.dcmread(source_path), pydicom.dcmread(output_path)
        assert out.PhotometricInterpretation == src.PhotometricInterpretation
        assert np.abs(out.pixel_array[::2, ::2].astype(int) - src.pixel_array).max() <= 1
        np.testing.assert_allclose(apply_modality_lut(out.pixel_array, out)[1::2, 1::2],
                                   apply_modality_lut(src.pixel_array, src), atol=float(src.get('RescaleSlope', 1)))


def enhanced_mr(path):
    """emri_small.dcm (enhanced MR, 10 frames of 64x64, 12-bit unsigned) with functional groups: shared spacing and
    orientation, per-frame positions 1.2 mm apart and frame types."""
    ds = pydicom.dcmread(data_file('emri_small.dcm'))
    measures, orientation, shared = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = SPACING, 1.2
    orientation.ImageOrientationPatient = [round(float(v), 8) for v in (*ROW_DIR, *COL_DIR)]
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for i in range(10):
        position, frame_type, frame = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [round(float(v), 4) for v in [-20.0, 10.0, 1.2 * i]]
        frame_type.FrameType = ['ORIGINAL', 'PRIMARY', 'T1', 'NONE']
        frame.PlanePositionSequence, frame.MRImageFrameTypeSequence = [position], [frame_type]
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def test_multi_frame_file_stays_multi_frame(tmp_path, models):
    """One output file with all frames, the source's bit layout and per-frame geometry in its functional groups."""
    source = enhanced_mr(tmp_path / 'emri.dcm')
    weights, opt = models['nearest']
    assert run_infer('-i', source, '-o', tmp_path / 'out', '-w', weights, '-opt', opt, '--normalize', 'minmax',
                     '-q') == 0
    _, (output, ) = output_series(tmp_path / 'out')
    src, out = pydicom.dcmread(source), pydicom.dcmread(output)
    assert (out.NumberOfFrames, out.Rows, out.Columns, out.SOPClassUID) == (10, 128, 128, src.SOPClassUID)
    assert (out.BitsAllocated, out.BitsStored, out.PixelRepresentation) == (16, 12, 0)
    assert out.pixel_array.dtype == np.uint16
    np.testing.assert_array_equal(out.pixel_array[:, ::2, ::2], src.pixel_array)
    np.testing.assert_allclose(
        [float(v) for v in out.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing],
        np.array(SPACING) / 2)
    shift = 0.25 * (SPACING[1] * ROW_DIR + SPACING[0] * COL_DIR)
    for src_frame, out_frame in zip(src.PerFrameFunctionalGroupsSequence, out.PerFrameFunctionalGroupsSequence):
        np.testing.assert_allclose(out_frame.PlanePositionSequence[0].ImagePositionPatient,
                                   np.asarray(src_frame.PlanePositionSequence[0].ImagePositionPatient) - shift,
                                   atol=1e-6)
        assert list(out_frame.MRImageFrameTypeSequence[0].FrameType) == ['DERIVED', 'SECONDARY', 'T1', 'NONE']


@pytest.mark.parametrize('name', ['MR_small_bigendian.dcm', 'MR_small_implicit.dcm', 'MR_small_RLE.dcm'])
def test_other_transfer_syntaxes_give_the_same_explicit_little_endian_output(tmp_path, models, name):
    weights, opt = models['x2']
    for i, source in enumerate((data_file('MR_small.dcm'), data_file(name))):
        assert run_infer('-i', source, '-o', tmp_path / f'out{i}', '-w', weights, '-opt', opt, '-q') == 0
    reference, output = (pydicom.dcmread(output_series(tmp_path / f'out{i}')[1][0]) for i in range(2))
    assert output.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    np.testing.assert_array_equal(output.pixel_array, reference.pixel_array)


def test_overlays_and_icons_are_dropped(tmp_path, models):
    """A real Siemens MPR slice (484x484) with an overlay plane and an icon image."""
    source = data_file('MR-SIEMENS-DICOM-WithOverlays.dcm')
    weights, opt = models['x2']
    assert run_infer('-i', source, '-o', tmp_path / 'out', '-w', weights, '-opt', opt, '-q') == 0
    out = pydicom.dcmread(output_series(tmp_path / 'out')[1][0])
    assert 0x60000010 in pydicom.dcmread(source) and not any(0x6000 <= tag.group <= 0x60FF for tag in out.keys())
    assert 'IconImageSequence' not in out and (out.Rows, out.Columns) == (968, 968)


def test_intensities_outside_the_window_are_kept(tmp_path):
    """The demo's abdomen slice (max 1123) has over 1000 pixels above its 99.5th percentile, the top of the window;
    super-resolved x2 by the Bicubic network (clamped to the window), the output reaches the source's maximum up to
    the bilinear interpolation of the part above the window, stays within the source's range, and keeps the mean
    of the bright region within 1 %."""
    source = os.path.join(ROOT, 'datasets', 'demo_mr', 'dicom', 'abdomen', 'MR-SIEMENS-DICOM-WithOverlays.dcm')
    torch.save({'params': {}}, tmp_path / 'bicubic.pth')
    arch = json.dumps({'type': 'Bicubic', 'num_in_ch': 1, 'upscale': 2})
    assert run_infer('-i', source, '-o', tmp_path / 'out', '-w', tmp_path / 'bicubic.pth', '--arch-args', arch,
                     '-q') == 0
    src, out = pydicom.dcmread(source), pydicom.dcmread(output_series(tmp_path / 'out')[1][0])
    before, after = (apply_modality_lut(ds.pixel_array, ds).astype(np.float64) for ds in (src, out))
    bright = before > np.percentile(before, 99.5)
    assert bright.sum() > 1000 and before.max() > 1.5 * np.percentile(before, 99.5)
    assert 0.95 * before.max() < after.max() <= before.max() and after.min() >= before.min()
    np.testing.assert_allclose(after[np.kron(bright, np.ones((2, 2), bool))].mean(), before[bright].mean(), rtol=0.01)


def test_normalise_then_to_stored_gives_back_stored_values():
    """The mapping alone: stored -> modality -> [0, 1] window -> modality -> stored, within 1 LSB: inside the window
    when clipped (training data), everywhere when not (inference)."""
    ds = mr_small()
    ds.RescaleSlope, ds.RescaleIntercept = 0.7, 12.0
    values = apply_modality_lut(ds.pixel_array, ds)
    y, (low, high) = normalise(values[None], 'percentile', (0.5, 99.5))
    error = np.abs(to_stored(low + y[0] * (high - low), ds).astype(int) - ds.pixel_array)
    inside = (values >= low) & (values <= high)
    assert inside.mean() > 0.95 and error[inside].max() <= 1 and error.max() > 1
    y, window = normalise(values[None], 'percentile', (0.5, 99.5), clip=False)
    assert window == (low, high) and y.min() < 0 and y.max() > 1
    back = to_stored(low + y[0] * (high - low), ds)
    assert back.dtype == np.int16 and np.abs(back.astype(int) - ds.pixel_array).max() <= 1


# --- tiles, precision ----------------------------------------------------------------------------------------------


def test_tiled_equals_untiled_when_the_overlap_covers_the_receptive_field():
    """Without attention, the tiny MRDABNet's receptive-field radius is 8 input pixels (3x3 first conv 1, 7x7 group
    conv 3, 3x3 local fusion 1, 3x3 global fusion 1, 3x3 upsampling conv 1, 3x3 last conv at x2 rounds up to 1), so
    tiles of 32 with 8 pixels of context equal untiled inference up to float rounding (1e-5); with 2 they do not."""
    torch.manual_seed(0)
    net = MRDABNet(**{k: v for k, v in TINY.items() if k != 'type'}, attention='none')
    slices = np.random.default_rng(0).random((3, 64, 64))
    whole = np.concatenate(list(Upscaler(net, torch.device('cpu'), batch=2).batches(slices, quiet=True)))
    tiled = np.concatenate(list(Upscaler(net, torch.device('cpu'), tile=32, overlap=8,
                                         batch=2).batches(slices, quiet=True)))
    too_little = np.concatenate(list(Upscaler(net, torch.device('cpu'), tile=32, overlap=2).batches(slices,
                                                                                                   quiet=True)))
    assert whole.shape == tiled.shape == (3, 128, 128)
    assert np.abs(tiled - whole).max() < 1e-5
    assert np.abs(too_little - whole).max() > 1e-4
    bf16 = np.concatenate(list(Upscaler(net, torch.device('cpu'), precision='bf16').batches(slices, quiet=True)))
    assert np.abs(bf16 - whole).max() < 0.05


@pytest.mark.parametrize('flags, tolerance', [
    ([], 2),  # the default: channels_last, fold
    (['--reparameterize', 'merge'], 2),
    (['--compile'], 2),
    (['--precision', 'bf16'], 0.05 * 65535),
    (['--precision', 'fp16'], 0.005 * 65535),
])
def test_fast_path_flags_match_the_plain_network(tmp_path, models, flags, tolerance):
    """16-bit output levels against --no-channels-last --reparameterize none (the plain network): the exact paths
    within float rounding (2 of 65535), AMP within its precision (see tests/test_fast_paths.py)."""
    cv2.imwrite(str(tmp_path / 'in.png'), (mr_small().pixel_array.astype(np.uint16)[:40, :48] * 16))
    weights, opt = models['x2']
    common = ['-i', tmp_path / 'in.png', '-w', weights, '-opt', opt, '-q']
    assert run_infer(*common, '-o', tmp_path / 'plain', '--no-channels-last', '--reparameterize', 'none') == 0
    assert run_infer(*common, '-o', tmp_path / 'fast', *flags) == 0
    plain, fast = (cv2.imread(str(tmp_path / out / 'in_SRx2' / 'in.png'), cv2.IMREAD_UNCHANGED).astype(np.int64)
                   for out in ('plain', 'fast'))
    assert plain.shape == fast.shape == (80, 96) and plain.max() > 1000
    assert np.abs(fast - plain).max() <= tolerance
    if '--precision' in flags:
        assert np.abs(fast - plain).max() > 0  # autocast did change the arithmetic


def test_three_channel_network_gets_repeated_slices(tmp_path):
    torch.manual_seed(0)
    net = MRDABNet(**dict({k: v for k, v in TINY.items() if k != 'type'}, num_in_ch=3, num_out_ch=3))
    slices = np.random.default_rng(0).random((2, 20, 24))
    (out, ) = Upscaler(net, torch.device('cpu'), batch=2).batches(slices, quiet=True)
    with torch.no_grad():
        expected = net(torch.from_numpy(slices).float()[:, None].repeat(1, 3, 1, 1)).mean(dim=1).clamp(0, 1)
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-6)


# --- a second reader, image input, trees -------------------------------------------------------------------------


def test_simpleitk_reads_the_same_physical_extent(tmp_path, models):
    """SimpleITK (GDCM) reads the output as a volume whose outer pixel corners coincide with the source's."""
    sitk = pytest.importorskip('SimpleITK')
    write_series(str(tmp_path / 'in'))
    weights, opt = models['x2']
    assert run_infer('-i', tmp_path / 'in', '-o', tmp_path / 'out', '-w', weights, '-opt', opt, '-q') == 0
    folder, outputs = output_series(tmp_path / 'out')
    src, out = (sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path)))
                for path in (tmp_path / 'in', folder))

    def outer_corners(image):
        w, h, d = image.GetSize()
        return np.array([
            image.TransformContinuousIndexToPhysicalPoint(index)
            for index in ((-0.5, -0.5, 0), (w - 0.5, h - 0.5, 0), (-0.5, -0.5, d - 1), (w - 0.5, h - 0.5, d - 1))
        ])

    assert src.GetSize() == (48, 64, 3) and out.GetSize() == (96, 128, 3)
    np.testing.assert_allclose(src.GetSpacing()[:2], SPACING[::-1])  # SimpleITK: (along a row, along a column)
    np.testing.assert_allclose(out.GetSpacing()[:2], np.array(SPACING[::-1]) / 2)
    np.testing.assert_allclose(out.GetDirection(), src.GetDirection(), atol=1e-7)
    np.testing.assert_allclose(outer_corners(out), outer_corners(src), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), [pydicom.dcmread(p).pixel_array for p in outputs])


def test_png_input_keeps_its_bit_depth(tmp_path, models):
    pixels = mr_small().pixel_array.astype(np.uint16)[:40, :48] * 16
    os.makedirs(tmp_path / 'png' / 'sub')
    cv2.imwrite(str(tmp_path / 'png' / 'a16.png'), pixels)
    cv2.imwrite(str(tmp_path / 'png' / 'sub' / 'b8.png'), (pixels // 256).astype(np.uint8))
    weights, opt = models['x2']
    assert run_infer('-i', tmp_path / 'png', '-o', tmp_path / 'out', '-w', weights, '-opt', opt, '-q') == 0
    a16 = cv2.imread(str(tmp_path / 'out' / 'png_SRx2' / 'a16.png'), cv2.IMREAD_UNCHANGED)
    b8 = cv2.imread(str(tmp_path / 'out' / 'png_SRx2' / 'sub' / 'b8.png'), cv2.IMREAD_UNCHANGED)
    assert a16.dtype == np.uint16 and a16.shape == (80, 96) and a16.max() > 255
    assert b8.dtype == np.uint8 and b8.shape == (80, 96)
    assert run_infer('-i', tmp_path / 'png' / 'a16.png', '-o', tmp_path / 'out', '-w', weights, '-opt', opt,
                     '--png-bit-depth', 8, '-q') == 0
    single = cv2.imread(str(tmp_path / 'out' / 'a16_SRx2' / 'a16.png'), cv2.IMREAD_UNCHANGED)
    assert single.dtype == np.uint8 and single.shape == (80, 96)


def test_tree_gives_one_series_per_input_series_and_png_on_request(tmp_path, models):
    write_series(str(tmp_path / 'tree' / 'patient1' / 'study' / 't2'), count=2, description='t2 tse')
    write_series(str(tmp_path / 'tree' / 'patient1' / 'study' / 'adc'), count=1, description='adc')
    (tmp_path / 'tree' / 'notes.txt').write_text('not DICOM')
    weights, opt = models['x2']
    args = ['-i', tmp_path / 'tree', '-o', tmp_path / 'out', '-w', weights, '-opt', opt, '--png', '-q']
    assert run_infer(*args, '--tile', 24, '--tile-overlap', 8, '--batch', 3) == 0
    names = sorted(set(os.listdir(tmp_path / 'out')) - {REPORT_NAME})
    assert [n.rsplit('_', 1)[0] for n in names] == ['adc_SRx2', 't2_tse_SRx2']
    report = json.loads((tmp_path / 'out' / REPORT_NAME).read_text())
    assert report['skipped'] == [{'path': 'notes.txt', 'reason': 'not a DICOM file', 'files': 1, 'fault': False}]
    assert sorted((p['source'], p['slices']) for p in report['produced']) == [('patient1/study/adc', 1),
                                                                           ('patient1/study/t2', 2)]
    t2 = tmp_path / 'out' / names[1]
    assert sorted(os.listdir(t2)) == ['IM0001.dcm', 'IM0002.dcm', 'png']
    png = cv2.imread(str(t2 / 'png' / '0002.png'), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.shape == (128, 96)
    before = os.stat(t2 / 'IM0001.dcm').st_mtime_ns
    assert run_infer(*args) == 2  # existing series folders are refused
    assert os.stat(t2 / 'IM0001.dcm').st_mtime_ns == before
    assert run_infer(*args, '--overwrite') == 0
    assert sorted(os.listdir(tmp_path / 'out')) == sorted(names + [REPORT_NAME])


def test_script_and_params_ema(tmp_path, models):
    """scripts/inference.py in a fresh interpreter, with --arch-args and a checkpoint whose params_ema is used."""
    weights, _ = models['x2']
    params = torch.load(weights, weights_only=True)['params']
    torch.save({'params': {'junk': torch.zeros(1)}, 'params_ema': params}, tmp_path / 'ema.pth')
    result = subprocess.run([
        sys.executable, os.path.join(ROOT, 'scripts', 'inference.py'), '-i', data_file('MR_small.dcm'), '-o',
        str(tmp_path / 'out'), '-w', str(tmp_path / 'ema.pth'), '--arch-args', json.dumps(TINY), '-q'
    ], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'total: 1 outputs' in result.stdout and '64x64 -> 128x128' in result.stdout
    _, (output, ) = output_series(tmp_path / 'out')
    assert pydicom.dcmread(output).pixel_array.shape == (128, 128)


# --- bad input -------------------------------------------------------------------------------------------------------


def bad_inputs(tmp_path, models):
    """name -> (CLI arguments, the file the message must name)."""
    weights, opt = models['x2']
    x3_weights, _ = models['x3']
    good = data_file('MR_small.dcm')
    (tmp_path / 'garbage.dcm').write_bytes(b'\x00' * 50 + b'not DICOM at all')
    no_pixels = mr_small()
    del no_pixels.PixelData
    no_pixels.save_as(tmp_path / 'no_pixels.dcm')
    torch.save({'params': {'conv.weight': torch.zeros(1)}}, tmp_path / 'wrong_keys.pth')
    (tmp_path / 'a_file').write_text('')
    out = tmp_path / 'out'
    model = ['-w', weights, '-opt', opt]
    return {
        'unreadable file': (['-i', tmp_path / 'garbage.dcm', '-o', out, *model], tmp_path / 'garbage.dcm'),
        'truncated file': (['-i', data_file('MR_truncated.dcm'), '-o', out, *model], 'MR_truncated.dcm'),
        'non-image DICOM': (['-i', tmp_path / 'no_pixels.dcm', '-o', out, *model], tmp_path / 'no_pixels.dcm'),
        'checkpoint with wrong keys': (['-i', good, '-o', out, '-w', tmp_path / 'wrong_keys.pth', '-opt', opt],
                                       tmp_path / 'wrong_keys.pth'),
        'checkpoint of another scale': (['-i', good, '-o', out, '-w', x3_weights, '-opt', opt], x3_weights),
        '--scale disagrees': (['-i', good, '-o', out, *model, '--scale', 3], weights),
        'missing parent': (['-i', good, '-o', tmp_path / 'missing' / 'out', *model], tmp_path / 'missing'),
        'parent is a file': (['-i', good, '-o', tmp_path / 'a_file' / 'out', *model], tmp_path / 'a_file'),
    }


BAD_INPUTS = ['unreadable file', 'truncated file', 'non-image DICOM', 'checkpoint with wrong keys',
              'checkpoint of another scale', '--scale disagrees', 'missing parent', 'parent is a file']


@pytest.mark.parametrize('case', BAD_INPUTS)
def test_bad_input_is_one_line_naming_the_file_and_leaves_nothing(tmp_path, models, capsys, case):
    args, named = bad_inputs(tmp_path, models)[case]
    before = set(os.listdir(tmp_path))
    assert run_infer(*args, '-q') == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('mrsr-infer: error: ') and '\n' not in err and str(named) in err, err
    assert set(os.listdir(tmp_path)) == before  # no output folder, no hidden temporary folder
    if case == 'checkpoint of another scale':
        assert 'upsample' in err and 'only the upsampling layers differ' in err


@pytest.mark.skipif(os.geteuid() == 0, reason='root may write anywhere')
def test_unwritable_output_folder(tmp_path, models, capsys):
    weights, opt = models['x2']
    (tmp_path / 'locked').mkdir(mode=0o555)
    assert run_infer('-i', data_file('MR_small.dcm'), '-o', tmp_path / 'locked', '-w', weights, '-opt', opt) == 2
    assert f'{tmp_path / "locked"}: no write permission' in capsys.readouterr().err
    assert os.listdir(tmp_path / 'locked') == []


def test_failure_while_writing_leaves_no_half_series(tmp_path, models, monkeypatch, capsys):
    write_series(str(tmp_path / 'in'))
    saved, dcmwrite = [], pydicom.dcmwrite

    def failing_write(path, ds, **kwargs):
        if saved:
            raise OSError(28, 'No space left on device', path)
        saved.append(path)
        dcmwrite(path, ds, **kwargs)

    monkeypatch.setattr(pydicom, 'dcmwrite', failing_write)
    weights, opt = models['x2']
    assert run_infer('-i', tmp_path / 'in', '-o', tmp_path / 'out', '-w', weights, '-opt', opt, '-q') == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('mrsr-infer: error: ') and err.endswith('IM0002.dcm: No space left on device (the disk or '
                                                                  'quota is full)') and '\n' not in err, err
    assert len(saved) == 1
    assert not os.path.exists(tmp_path / 'out')


def test_a_series_that_fails_is_skipped_and_the_others_are_produced(tmp_path, models, capsys):
    """One series that cannot be normalised (constant) and one whose file changed since the scan (here: its pixel
    data cut short) do not stop the run; both are reported with their reason, the good series is produced."""
    write_series(str(tmp_path / 'in' / 'good'), count=2, description='t2 good')
    write_series(str(tmp_path / 'in' / 'constant'), count=2, description='t2 constant', PixelData=bytes(64 * 48 * 2))
    changed = write_series(str(tmp_path / 'in' / 'changed'), count=2, description='t2 changed')
    import mrsr_plugin.apps.infer.run as inference
    scan = inference.scan_dicom_tree

    def scan_then_change(path, progress=False):
        found = scan(path, progress)
        ds = pydicom.dcmread(changed[1])
        ds.PixelData = ds.PixelData[:100]
        ds.save_as(changed[1])
        return found

    weights, opt = models['x2']
    monkey = pytest.MonkeyPatch()
    monkey.setattr(inference, 'scan_dicom_tree', scan_then_change)
    try:
        assert run_infer('-i', tmp_path / 'in', '-o', tmp_path / 'out', '-w', weights, '-opt', opt) == 1  # skips
    finally:
        monkey.undo()
    captured = capsys.readouterr()
    assert 'total: 1 outputs' in captured.out
    assert 'skipped constant/slice0.dcm: constant intensity' in captured.err
    assert 'skipped changed/slice1.dcm: pixel data of 100 bytes' in captured.err
    names = sorted(os.listdir(tmp_path / 'out'))
    assert len(names) == 2 and names[0] == REPORT_NAME and names[1].startswith('t2_good_SRx2_')
    report = json.loads((tmp_path / 'out' / REPORT_NAME).read_text())
    assert [p['source'] for p in report['produced']] == ['good']
    assert sorted(s['path'] for s in report['skipped']) == ['changed/slice1.dcm', 'constant/slice0.dcm']
    assert all(s['reason'].endswith('its series (2 files) is skipped') for s in report['skipped'])


def test_nothing_to_produce_is_one_line_and_leaves_nothing(tmp_path, models, capsys):
    write_series(str(tmp_path / 'in'), count=2, description='flat', PixelData=bytes(64 * 48 * 2))
    weights, opt = models['x2']
    assert run_infer('-i', tmp_path / 'in', '-o', tmp_path / 'out', '-w', weights, '-opt', opt, '-q') == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith('skipped slice0.dcm: constant intensity')
    assert err[-1] == (f'mrsr-infer: error: {tmp_path / "in"}: none of the 1 series or volumes could be '
                       'super-resolved; reasons above')
    assert not (tmp_path / 'out').exists()


def test_a_really_full_disk(tmp_path, models, capsys):
    """On a 64 KiB tmpfs (needs root; skipped elsewhere): one line naming the file, exit 2, no half series."""
    write_series(str(tmp_path / 'in'), count=3)
    with tiny_tmpfs(tmp_path / 'tiny', '64k') as mount:
        weights, opt = models['x2']
        assert run_infer('-i', tmp_path / 'in', '-o', mount / 'out', '-w', weights, '-opt', opt, '-q') == 2
        err = capsys.readouterr().err.strip()
        assert '\n' not in err and 'Traceback' not in err, err
        assert re.fullmatch(rf'mrsr-infer: error: {mount}/out/\S+: No space left on device \(the disk or quota is '
                            r'full\)', err), err
        assert not (mount / 'out').exists() and os.listdir(mount) == []


def test_load_series_of_the_output_matches_the_network_output(tmp_path, models):
    """End to end with the tiny MRDABNet: the written series, read back in modality units and normalised with the
    source's window, equals the network's output on the normalised source clipped to the window, plus what the
    clip removed upsampled bilinearly, within one stored LSB."""
    write_series(str(tmp_path / 'in'), count=2)
    weights, opt = models['x2']
    assert run_infer('-i', tmp_path / 'in', '-o', tmp_path / 'out', '-w', weights, '-opt', opt, '-q') == 0
    (source, ), _ = scan_dicom_tree(str(tmp_path / 'in'))
    (output, ), _ = scan_dicom_tree(str(tmp_path / 'out'))
    x, (low, high) = normalise(load_series(source), 'percentile', (0.5, 99.5), clip=False)
    x = torch.from_numpy(x).float()[:, None]
    net = MRDABNet(**{k: v for k, v in TINY.items() if k != 'type'})
    net.load_state_dict(torch.load(weights, weights_only=True)['params'])
    with torch.no_grad():
        outside = F.interpolate(x - x.clamp(0, 1), scale_factor=2, mode='bilinear', align_corners=False)
        expected = (net(x.clamp(0, 1)).clamp(0, 1) + outside)[:, 0].numpy()
    np.testing.assert_allclose((load_series(output) - low) / (high - low), expected, atol=1 / (high - low) + 1e-6)
