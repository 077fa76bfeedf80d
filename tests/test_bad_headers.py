"""Broken DICOM headers (issue 19): the shared validator (mrsr_plugin.mrio.header) and the ten causes that made
mrsr-infer stop with a traceback (and lmdb_prepare keep broken slices, or abort), each one mutation of one slice of
a good series; pydicom's warnings go to the report, not the console.

Each cause runs both tools in this process on a good series and a series with the broken slice: exit status 1 (done,
some inputs skipped), no traceback, the broken file skipped with its one-line reason on the console and in the report,
the good series and the rest of the other one produced.
"""
import io
import json
import os

import numpy as np
import pydicom
import pytest
from conftest import run_infer
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import JPEGBaseline8Bit, RLELossless, generate_uid

from mrsr_plugin.apps.fuzz import encode, set_raw, tiny_model
from mrsr_plugin.apps.infer.run import REPORT_NAME
from mrsr_plugin.cli import prepare as prepare_cli
from mrsr_plugin.mrio.dicom import scan_dicom_tree
from mrsr_plugin.mrio.header import header_problem


def mr_small(**raw):
    """MR_small.dcm with ``raw`` values written as a broken file holds them (None deletes one)."""
    ds = pydicom.dcmread(get_testdata_file('MR_small.dcm'))
    for keyword, text in raw.items():
        if text is None:
            del ds[keyword]
        else:
            set_raw(ds, keyword, text)
    return ds


def problem(ds):
    """header_problem of ``ds`` as written to a file and read back, as the scan sees it."""
    return header_problem(pydicom.dcmread(io.BytesIO(encode(ds))))


# --- the validator ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('raw, reason', [
    ({}, None),
    ({'PixelSpacing': '0.5\\0.5\\0.5'}, "PixelSpacing has 3 values ('0.5\\\\0.5\\\\0.5'), not 2"),
    ({'PixelSpacing': '0\\0.5'}, "PixelSpacing '0\\\\0.5' is not positive"),
    ({'PixelSpacing': '1e999\\1'}, "PixelSpacing '1e999\\\\1' is not finite"),
    ({'ImageOrientationPatient': '1\\1\\0\\0\\1\\0'}, 'is not two orthonormal direction cosines (lengths 1.41'),
    ({'ImageOrientationPatient': '1\\0\\0\\1\\0\\0'}, 'dot product 1)'),
    ({'ImageOrientationPatient': '1\\0\\0\\0\\0.9999\\0.0001'}, None),  # written with few decimals: within tolerance
    ({'RescaleSlope': '0', 'RescaleIntercept': '0'}, 'RescaleSlope 0 maps every pixel to one value'),
    ({'RescaleIntercept': '-inf', 'RescaleSlope': '1'}, "RescaleIntercept '-inf' is not finite"),
    ({'BitsAllocated': None}, 'no BitsAllocated'),
    ({'PixelRepresentation': None}, 'no PixelRepresentation'),
    ({'NumberOfFrames': 'abc'}, "NumberOfFrames 'abc' is not an integer"),
    ({'NumberOfFrames': '0'}, 'NumberOfFrames 0 is out of range (1 to 65535)'),
    ({'NumberOfFrames': '2'}, 'pixel data of 8192 bytes, but 64x64 pixels x 2 frames of 16 bits need 16384'),
    ({'InstanceNumber': '1.5'}, "InstanceNumber '1.5' is not an integer"),
    ({'SliceLocation': 'nan'}, "SliceLocation 'nan' is not finite"),
    ({'SeriesInstanceUID': 'abc'}, "SeriesInstanceUID 'abc' is not a UID (digits and dots, at most 64 characters)"),
    ({'SOPClassUID': None}, 'no SOPClassUID'),
    ({'PhotometricInterpretation': None}, 'no PhotometricInterpretation'),
    ({'PhotometricInterpretation': 'MONOCHROME3'}, "PhotometricInterpretation 'MONOCHROME3' with 1 sample per pixel"),
], ids=lambda v: str(v)[:40])
def test_header_problem(raw, reason):
    found = problem(mr_small(**raw))
    assert (found is None) if reason is None else (found is not None and reason in found), found


@pytest.mark.parametrize('keyword, value, reason', [
    ('BitsStored', 17, 'BitsStored 17 is out of range (1 to 16)'),
    ('BitsAllocated', 12, 'BitsAllocated 12; MR slices have 8, 16 or 32'),
    ('Rows', 0, 'Rows 0 is out of range (1 to 65535)'),
    ('Columns', 65535, 'image size 64x65535 (rows x columns) is not plausible for MR (at most 8192 a side)'),
    ('PixelRepresentation', 2, 'PixelRepresentation 2 is out of range (0 to 1)'),
])
def test_binary_values_out_of_range(keyword, value, reason):
    ds = mr_small()
    setattr(ds, keyword, value)
    assert problem(ds).startswith(reason), problem(ds)


def test_transfer_syntax_must_match_the_pixel_data():
    native = mr_small()
    native.file_meta.TransferSyntaxUID = RLELossless  # RLE decodes here: only the encapsulation tells
    assert problem(native) == ('TransferSyntaxUID says RLE Lossless, but the pixel data are not encapsulated '
                               '(compressed pixel data are): a wrong transfer syntax?')
    native.file_meta.TransferSyntaxUID = '1.2.3.4'
    assert problem(native) == "TransferSyntaxUID '1.2.3.4' is not a transfer syntax pydicom knows"
    rle = pydicom.dcmread(get_testdata_file('MR_small_RLE.dcm'))
    assert problem(rle) is None
    rle.file_meta.TransferSyntaxUID = '1.2.840.10008.1.2.1'
    assert problem(rle) == 'encapsulated (compressed) pixel data, but TransferSyntaxUID says Explicit VR Little Endian'
    jpeg = mr_small()
    jpeg.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    assert 'compressed with JPEG Baseline' in problem(jpeg) or 'not encapsulated' in problem(jpeg)


def test_enhanced_files_are_checked_frame_by_frame():
    """A per-frame functional group with a broken PixelSpacing (frame 2 of 3) is found."""
    ds = mr_small()
    ds.NumberOfFrames = 3
    ds.PixelData = ds.PixelData * 3
    frames = []
    for spacing in ('0.5\\0.5', '0.5\\0.5', '0.5\\abc'):
        measures = Dataset()
        set_raw(measures, 'PixelSpacing', spacing)
        group = Dataset()
        group.PixelMeasuresSequence = Sequence([measures])
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    assert problem(ds) == "PixelSpacing '0.5\\\\abc' is not 2 numbers"


# --- the ten causes of issue 19, through both tools ------------------------------------------------------------------

CAUSES = {  # cause: (raw values of the broken slice, the reason it is skipped with)
    '1 RescaleSlope text': ({'RescaleSlope': 'abc'}, "RescaleSlope 'abc' is not a number"),
    '2 RescaleSlope two values': ({'RescaleSlope': '1\\2'}, "RescaleSlope has 2 values ('1\\\\2'), not 1"),
    '3 ImagePositionPatient 2 values': ({'ImagePositionPatient': '0\\0'},
                                        "ImagePositionPatient has 2 values ('0\\\\0'), not 3"),
    '3 ImagePositionPatient 4 values': ({'ImagePositionPatient': '0\\0\\3\\0'},
                                        "ImagePositionPatient has 4 values ('0\\\\0\\\\3\\\\0'), not 3"),
    '4 PixelSpacing 1 value': ({'PixelSpacing': '0.3'}, "PixelSpacing has 1 value ('0.3'), not 2"),
    '4 PixelSpacing 3 values': ({'PixelSpacing': '0.3\\0.3\\0.3'}, 'PixelSpacing has 3 values'),
    '4 PixelSpacing text': ({'PixelSpacing': 'abc\\def'}, "PixelSpacing 'abc\\\\def' is not 2 numbers"),
    '5 ImageOrientationPatient 5 values': ({'ImageOrientationPatient': '1\\0\\0\\0\\1'},
                                           'ImageOrientationPatient has 5 values'),
    '5 ImageOrientationPatient 7 values': ({'ImageOrientationPatient': '1\\0\\0\\0\\1\\0\\0'},
                                           'ImageOrientationPatient has 7 values'),
    '6 PixelSpacing nan': ({'PixelSpacing': 'nan\\0.3'}, "PixelSpacing 'nan\\\\0.3' is not finite"),
    '6 ImagePositionPatient inf': ({'ImagePositionPatient': '0\\inf\\3'},
                                   "ImagePositionPatient '0\\\\inf\\\\3' is not finite"),
    '6 ImageOrientationPatient nan': ({'ImageOrientationPatient': '1\\0\\0\\0\\nan\\0'},
                                      "ImageOrientationPatient '1\\\\0\\\\0\\\\0\\\\nan\\\\0' is not finite"),
    '7 SOPClassUID missing': ({'SOPClassUID': None}, 'no SOPClassUID'),
    '8 SOPInstanceUID missing': ({'SOPInstanceUID': None}, 'no SOPInstanceUID'),
    '9 RGB on one sample': ({'PhotometricInterpretation': 'RGB'},
                            "PhotometricInterpretation 'RGB' with 1 sample per pixel; MR slices are MONOCHROME1 or "
                            'MONOCHROME2'),
    '10 RescaleSlope nan': ({'RescaleSlope': 'nan'}, "RescaleSlope 'nan' is not finite"),
}


def write_series(folder, broken=None, which=(1, )):
    """Three slices of MR_small (slice i: + 100 i, 3 mm apart), one series of its own patient; the slices in
    ``which`` get the ``broken`` raw values (with a RescaleIntercept, so that a slope is used)."""
    os.makedirs(folder)
    uid = generate_uid()
    for i in range(3):
        ds = pydicom.dcmread(get_testdata_file('MR_small.dcm'))
        ds.SeriesInstanceUID, ds.PatientID, ds.SeriesDescription = uid, os.path.basename(folder), 't2'
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient, ds.InstanceNumber = [0.0, 0.0, 3.0 * i], i + 1
        ds.PixelData = (ds.pixel_array + 100 * i).astype(np.int16).tobytes()
        if broken and i in which:
            ds.RescaleIntercept = 0
            for keyword, text in broken.items():
                if text is None:
                    del ds[keyword]
                else:
                    set_raw(ds, keyword, text)
        with open(os.path.join(folder, f'slice{i}.dcm'), 'wb') as f:
            f.write(encode(ds))


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    return tiny_model(str(tmp_path_factory.mktemp('model')))


def run_prepare(source, output, capsys):
    with pytest.raises(SystemExit) as exit_:
        prepare_cli.main([str(source), str(output), '--scales', '2', '--split-ratio', '1', '1', '1', '--plane', 'any',
                          '--keep-patient-ids', '--secret-file', str(output) + '.secret'])
    captured = capsys.readouterr()
    return exit_.value.code, captured.out + captured.err, json.loads((output / 'report.json').read_text())


@pytest.mark.parametrize('cause', CAUSES)
def test_each_cause_is_one_skipped_file_and_the_run_goes_on(tmp_path, model, capsys, cause):
    broken, reason = CAUSES[cause]
    whole = cause.startswith('10')  # the issue's NaN slope: the whole series (every file skipped, none kept)
    write_series(str(tmp_path / 'in' / 'bad'), broken, which=(0, 1, 2) if whole else (1, ))
    write_series(str(tmp_path / 'in' / 'good'))
    bad_files = [f'bad/slice{i}.dcm' for i in ((0, 1, 2) if whole else (1, ))]

    status = run_infer('-i', tmp_path / 'in', '-o', tmp_path / 'sr', '-w', model[0], '-opt', model[1])
    captured = capsys.readouterr()
    console = captured.out + captured.err
    assert status == 1 and 'Traceback' not in console and 'Warning' not in console, console
    report = json.loads((tmp_path / 'sr' / REPORT_NAME).read_text())
    reasons = {s['path']: s['reason'] for s in report['skipped']}
    assert sorted(reasons) == bad_files and all(reason in r for r in reasons.values()), reasons
    for path in bad_files:
        assert f'skipped {path}: {reasons[path]}' in console
    assert {(p['source'], p['files']) for p in report['produced']} == ({('good', 3)} if whole else
                                                                        {('good', 3), ('bad', 2)})

    status, console, report = run_prepare(tmp_path / 'in', tmp_path / 'prepared', capsys)
    assert status == 1 and 'Traceback' not in console and 'Warning' not in console, console
    assert {s['path']: s['reason'] for s in report['skipped']} == reasons  # the same check, the same words
    assert {(i['path'], i['slices'], i['slices_kept']) for i in report['included']} == (
        {('good', 3, 3)} if whole else {('good', 3, 3), ('bad', 2, 2)})
    assert sum(report['counts'].values()) == (3 if whole else 5)


def test_empty_orientation_counts_as_absent(tmp_path, model, capsys):
    """An ImageOrientationPatient without a value is no orientation (as a missing one): the slice is kept and its
    series, no longer sharing one orientation, is ordered by InstanceNumber and says so."""
    write_series(str(tmp_path / 'in' / 'series'), {'ImageOrientationPatient': ''})
    (series, ), skipped = scan_dicom_tree(str(tmp_path / 'in'))
    assert skipped == [] and len(series.files) == 3 and series.orientation is None
    assert series.warnings == ['the files do not share one ImageOrientationPatient (a localizer?): slices ordered by '
                               'InstanceNumber']
    assert run_infer('-i', tmp_path / 'in', '-o', tmp_path / 'sr', '-w', model[0], '-opt', model[1], '-q') == 0


def test_a_series_mixing_pixel_spacings_is_skipped_whole(tmp_path):
    """One grid per series: a file whose PixelSpacing differs is a broken header or another series, and which of
    the files is right cannot be told."""
    write_series(str(tmp_path / 'in'), {'PixelSpacing': '0.5\\0.5'})
    series, skipped = scan_dicom_tree(str(tmp_path / 'in'))
    skipped = sorted(skipped, key=lambda s: s.path)
    assert series == [] and [s.path for s in skipped] == [str(tmp_path / 'in' / f'slice{i}.dcm') for i in range(3)]
    assert skipped[1].reason == ('its series mixes pixel spacings 0.3125x0.3125 mm (2 files) and 0.5x0.5 mm (1 file); '
                                 'this file is 0.5x0.5 mm')


def test_pydicom_warnings_go_to_the_report_not_the_console(tmp_path, model, capsys):
    """A usable file whose StudyInstanceUID is longer than a UI allows: pydicom warns when the scan reads it; the
    warning is in the report, with the series, and nothing but the summary reaches the console."""
    write_series(str(tmp_path / 'in' / 'series'), {'StudyInstanceUID': '1.2.' + '3' * 70}, which=(0, 1, 2))
    assert run_infer('-i', tmp_path / 'in', '-o', tmp_path / 'sr', '-w', model[0], '-opt', model[1], '-q') == 0
    captured = capsys.readouterr()
    assert captured.err == '' and 'Warning' not in captured.out, captured
    (produced, ) = json.loads((tmp_path / 'sr' / REPORT_NAME).read_text())['produced']
    assert produced['messages'] == ['UserWarning: The value length (74) exceeds the maximum length of 64 allowed for '
                                    'VR UI. Please see <https://dicom.nema.org/medical/dicom/current/output/html/'
                                    'part05.html#table_6.2-1> for allowed values for each VR.']
