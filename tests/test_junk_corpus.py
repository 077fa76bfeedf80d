"""Both data tools on a corpus of every kind of bad input mixed with good series, as a new user's download might be.

Good series: three slices each of two real Prostate-3T patients (one reached through a symbolic link to a folder
outside the corpus), a small series in a folder whose names have spaces and non-ASCII characters, and two series
that load but are noted (uneven and missing positions). Junk: text named .dcm, a truncated copy inside a good
series' folder, no PixelData, CT, colour, JPEG-LS without a decoder (MPEG-2 where a JPEG-LS decoder is installed),
zero bytes, headers claiming 65535 x 65535 pixels (plain and RLE) or more pixels than the file holds, a series
mixing slice sizes, a second copy of a good slice, a series that cannot be normalised, DICOMDIR, a broken link, a
link loop, a pipe.

Each tool runs as a user runs it (a fresh interpreter) and must: print no traceback, exit 1 (done, some inputs
skipped), produce every good series exactly as a run on the good series alone does, and report every bad file with
its reason.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pydicom
import pytest
import torch
import yaml
from pydicom.data import get_testdata_file
from pydicom.pixels import get_decoder
from pydicom.uid import JPEGLSLossless, MPEG2MPML, generate_uid

from mrsr_plugin.mrio.lmdb import read_lmdb
from mrsr_plugin.archs.mrdab_arch import MRDABNet
from mrsr_plugin.apps import prepare
from mrsr_plugin.cli import prepare as prepare_cli
from mrsr_plugin.apps.infer.run import REPORT_NAME

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROSTATE = os.path.join(ROOT, 'datasets', 'prostate3t')
SLICES = ['000008.dcm', '000009.dcm', '000010.dcm']  # three neighbouring slices of each real patient
TINY = dict(num_in_ch=1, num_out_ch=1, num_feat=8, num_block=1, num_groups=1, growth=4, upscale=2)
UNICODE_FOLDER = os.path.join('Patiënt 3 – Müller', 'série T2 ax')


def prostate_series(patient):
    """(study folder name, series folder name, source folder) of an embedded Prostate-3T patient."""
    (study, ) = os.listdir(os.path.join(PROSTATE, patient))
    (series, ) = os.listdir(os.path.join(PROSTATE, patient, study))
    return study, series, os.path.join(PROSTATE, patient, study, series)


def copy_prostate(patient, destination):
    study, series, source = prostate_series(patient)
    folder = os.path.join(destination, study, series)
    os.makedirs(folder)
    for name in SLICES:
        shutil.copy(os.path.join(source, name), folder)
    return folder


def mr_small(**attributes):
    """MR_small.dcm (64x64, signed 16 bits) with new UIDs and ``attributes`` (None deletes one)."""
    ds = pydicom.dcmread(get_testdata_file('MR_small.dcm'))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def small_series(folder, description, positions, patient='PAT-ÄÖ-3', **attributes):
    """Slices of MR_small (slice i: + 100 i) at ``positions`` (None: no ImagePositionPatient), one new series."""
    os.makedirs(folder, exist_ok=True)
    uid, paths = generate_uid(), []
    for i, z in enumerate(positions):
        ds = mr_small(SeriesInstanceUID=uid, SeriesDescription=description, PatientID=patient, InstanceNumber=i + 1,
                      ImageOrientationPatient=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                      ImagePositionPatient=None if z is None else [0.0, 0.0, float(z)])
        ds.PixelData = (ds.pixel_array + 100 * i).astype(np.int16).tobytes()
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        paths.append(os.path.join(folder, f'slice{i}.dcm'))
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def good_corpus(root, outside):
    """The three good series, and two that load but are noted (uneven and missing positions); the second patient
    lives in ``outside`` (linked into ``root`` by the junk corpus)."""
    copy_prostate('Prostate3T-03-0001', os.path.join(root, 'Prostate3T-03-0001'))
    copy_prostate('Prostate3T-03-0004', os.path.join(outside, 'Prostate3T-03-0004'))
    small_series(os.path.join(root, UNICODE_FOLDER), 't2 axial', [0, 3, 6])
    small_series(os.path.join(root, 'Noted', 'uneven'), 't2 uneven', [0, 3, 3, 6], patient='NOTE-1')
    small_series(os.path.join(root, 'Noted', 'no positions'), 't2 nopos', [None, None], patient='NOTE-1')


def junk_corpus(root, good, outside):
    """The good corpus (``good`` without its second patient, who is linked in from ``outside``) plus every kind of
    junk; returns {path relative to root: what its reason must contain}."""
    shutil.copytree(good, root, ignore=lambda folder, names: ['Prostate3T-03-0004'] if folder == good else [])
    os.symlink(os.path.join(outside, 'Prostate3T-03-0004'), os.path.join(root, 'linked patient'))
    expected = {}

    def junk(relative, reason):
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        expected[relative] = reason
        return path

    with open(junk('Junk patient/notes.dcm', 'not a DICOM file'), 'w') as f:
        f.write('Study notes, not an image\n' * 40)
    study, series, source = prostate_series('Prostate3T-03-0001')
    cut = open(os.path.join(source, SLICES[0]), 'rb').read()
    with open(junk(f'Prostate3T-03-0001/{study}/{series}/zz truncated copy.dcm', 'truncated file'), 'wb') as f:
        f.write(cut[:len(cut) // 2])
    mr_small(PixelData=None, SeriesInstanceUID=generate_uid()).save_as(junk('Junk patient/no pixels.dcm',
                                                                            'no pixel data'))
    shutil.copy(get_testdata_file('CT_small.dcm'), junk('Junk patient/ct.dcm', 'modality CT, not MR'))
    colour = mr_small(SeriesInstanceUID=generate_uid(), SamplesPerPixel=3, PhotometricInterpretation='RGB',
                      PlanarConfiguration=0, BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0)
    colour.PixelData = bytes(64 * 64 * 3)
    colour.save_as(junk('Junk patient/colour.dcm', 'colour image (3 samples per pixel)'))
    compressed = pydicom.dcmread(get_testdata_file('MR_small_jpeg_ls_lossless.dcm'))
    if get_decoder(JPEGLSLossless).is_available:  # then no decoder at all: MPEG-2
        compressed.file_meta.TransferSyntaxUID = MPEG2MPML
    compressed.save_as(junk('Junk patient/compressed.dcm', 'compressed with'))
    open(junk('Junk patient/empty.dcm', 'empty file'), 'wb').close()
    huge = mr_small(SeriesInstanceUID=generate_uid(), Rows=65535, Columns=65535)
    huge.save_as(junk('Junk patient/huge.dcm', 'image size 65535x65535 (rows x columns) is not plausible'))
    lying = mr_small(SeriesInstanceUID=generate_uid(), Rows=4096, Columns=4096)
    lying.save_as(junk('Junk patient/lying size.dcm', 'pixel data of 8192 bytes, but 4096x4096 pixels'))
    huge_rle = pydicom.dcmread(get_testdata_file('MR_small_RLE.dcm'))
    huge_rle.SeriesInstanceUID, huge_rle.Rows, huge_rle.Columns = generate_uid(), 65535, 65535
    huge_rle.save_as(junk('Junk patient/huge rle.dcm', 'image size 65535x65535 (rows x columns) is not plausible'))
    mixed = generate_uid()
    mr_small(SeriesInstanceUID=mixed).save_as(junk('Junk patient/mixed/a.dcm', 'mixes slice sizes'))
    narrow = mr_small(SeriesInstanceUID=mixed)
    narrow.PixelData, narrow.Columns = np.ascontiguousarray(narrow.pixel_array[:, :48]).tobytes(), 48
    narrow.save_as(junk('Junk patient/mixed/b.dcm', 'mixes slice sizes'))
    shutil.copy(os.path.join(root, UNICODE_FOLDER, 'slice1.dcm'),
                junk(os.path.join(UNICODE_FOLDER, 'zz copy of slice1.dcm'), 'duplicate of'))
    flat = small_series(os.path.join(root, 'Junk patient', 't2 flat'), 't2 flat', [0, 3], patient='JUNK-1',
                        PixelData=bytes(64 * 64 * 2))
    expected[os.path.relpath(flat[0], root)] = 'constant intensity'
    shutil.copy(get_testdata_file('DICOMDIR'), junk('Junk patient/DICOMDIR', 'DICOMDIR index, not an image'))
    os.symlink(os.path.join(outside, 'gone.dcm'), junk('Junk patient/broken link.dcm', 'broken symbolic link'))
    os.symlink(root, junk('Junk patient/loop', 'symbolic link loop'))
    os.mkfifo(junk('Junk patient/pipe.dcm', 'not a regular file'))
    return expected


def run_tool(script, *args):
    """A tool in a fresh interpreter; returns (exit status, stdout + stderr)."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', script), *map(str, args)], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', '')))
    return proc.returncode, proc.stdout


@pytest.fixture(scope='module')
def corpora(tmp_path_factory):
    base = tmp_path_factory.mktemp('corpora')
    good, junk, outside = base / 'good', base / 'junk corpus', base / 'shared storage'
    good_corpus(str(good), str(outside))
    shutil.copytree(outside / 'Prostate3T-03-0004', good / 'Prostate3T-03-0004')  # a real folder in the clean run
    expected = junk_corpus(str(junk), str(good), str(outside))
    torch.manual_seed(0)
    weights, opt = base / 'tiny.pth', base / 'tiny.yml'
    torch.save({'params': MRDABNet(**TINY).state_dict()}, weights)
    opt.write_text(yaml.safe_dump({'scale': 2, 'network_g': dict(TINY, type='MRDABNet')}))
    return {'base': base, 'good': good, 'junk': junk, 'expected': expected, 'weights': weights, 'opt': opt}


def test_lmdb_prepare_on_the_junk_corpus(corpora):
    base, expected = corpora['base'], corpora['expected']
    common = ['--scales', '2', '4', '--split-ratio', '1', '1', '1', '--secret-file', base / 'secret', '--quiet']
    prepare_cli.main([str(corpora['good']), str(base / 'prepared good'), *map(str, common)])
    status, output = run_tool('lmdb_prepare.py', corpora['junk'], base / 'prepared junk', *common[:-1])
    assert status == 1 and 'Traceback' not in output, output  # done, some inputs skipped
    good, junk = base / 'prepared good', base / 'prepared junk'
    for split in prepare.SPLITS:
        for name in ('HR.lmdb', 'LR_x2.lmdb', 'LR_x4.lmdb'):
            assert read_lmdb(junk / split / name) == read_lmdb(good / split / name), (split, name)
    split = json.loads((junk / 'split.json').read_text())
    assert split == json.loads((good / 'split.json').read_text())
    assert len(split['patients']) == 4 and set(split['patients'].values()) == set(prepare.SPLITS)

    report = json.loads((junk / 'report.json').read_text())
    redact = prepare.Redactor(str(corpora['junk']), set(), (base / 'secret').read_bytes().strip())
    reasons = {entry['path']: entry['reason'] for entry in report['skipped']}
    for relative, reason in expected.items():
        assert reason in reasons.get(redact.path(os.path.join(corpora['junk'], relative)), ''), (relative, reasons)
        assert f'skipped {relative}: {reason}' in output or os.path.dirname(relative) in output
    assert len(reasons) == len(expected)  # nothing else was skipped
    warned = {entry['warning'].split(':')[0] for entry in report['warnings']}
    assert warned == {'1 slice position(s) hold a different number of files than the others (1), e.g. 2 at 3 mm '
                      'along the normal', 'no ImagePositionPatient in 2 of 2 files'}
    assert sorted(i['slices'] for i in report['included']) == [2, 3, 3, 3, 4]  # every good series, whole
    print(f'lmdb_prepare: 0 tracebacks, {len(reasons)} inputs skipped with a reason, '
          f'{len(report["included"])} good series produced ({len(report["warnings"])} with a warning)')


def test_mrsr_infer_on_the_junk_corpus(corpora):
    base, expected = corpora['base'], corpora['expected']
    model = ['-w', corpora['weights'], '-opt', corpora['opt']]
    status, output = run_tool('inference.py', '-i', corpora['junk'], '-o', base / 'sr junk', *model)
    assert status == 1 and 'Traceback' not in output, output  # done, some inputs skipped
    from mrsr_plugin.cli.infer import main
    main(['-i', str(corpora['good']), '-o', str(base / 'sr good'), *map(str, model), '-q'])

    good_folders = sorted(set(os.listdir(base / 'sr good')) - {REPORT_NAME})
    junk_folders = sorted(set(os.listdir(base / 'sr junk')) - {REPORT_NAME})
    assert len(good_folders) == 5 and good_folders == junk_folders
    for folder in good_folders:
        names = sorted(os.listdir(base / 'sr good' / folder))
        assert sorted(os.listdir(base / 'sr junk' / folder)) == names and len(names) in (2, 3, 4)
        for name in names:
            a, b = (pydicom.dcmread(base / run / folder / name) for run in ('sr good', 'sr junk'))
            np.testing.assert_array_equal(a.pixel_array, b.pixel_array)
            assert (a.get('ImagePositionPatient'), a.SourceImageSequence[0].ReferencedSOPInstanceUID) == (
                b.get('ImagePositionPatient'), b.SourceImageSequence[0].ReferencedSOPInstanceUID)

    report = json.loads((base / 'sr junk' / REPORT_NAME).read_text())
    reasons = {entry['path']: entry['reason'] for entry in report['skipped']}
    for relative, reason in expected.items():
        assert reason in reasons.get(relative, ''), (relative, reasons)
        assert f'skipped {relative}: {reason}' in output or os.path.dirname(relative) in output
    assert len(reasons) == len(expected)
    produced = {p['source']: p for p in report['produced']}
    assert set(produced) == {f'Prostate3T-03-0001/{"/".join(prostate_series("Prostate3T-03-0001")[:2])}',
                             f'linked patient/{"/".join(prostate_series("Prostate3T-03-0004")[:2])}',
                             UNICODE_FOLDER, 'Noted/uneven', 'Noted/no positions'}
    assert produced['Noted/no positions']['warnings'] == [
        'no ImagePositionPatient in 2 of 2 files: slices ordered by InstanceNumber']
    print(f'mrsr-infer: 0 tracebacks, {len(reasons)} inputs skipped with a reason, {len(good_folders)} good series '
          f'produced, equal to the clean run ({sum(bool(p["warnings"]) for p in produced.values())} with a warning)')
