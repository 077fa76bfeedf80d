"""A seeded mutation fuzzer of DICOM input for ``mrsr-prepare`` and ``mrsr-infer`` (``scripts/fuzz_inputs.py``).

Corpus (:func:`build_corpus`): copies of real MR series, each with new UIDs and a PatientID of its own, in a folder
of its own: a few neighbouring slices of the embedded Prostate-3T patients (centre-cropped), and pydicom's MR test
files (MR_small in four transfer syntaxes, as a series of three slices; the enhanced multi-frame emri_small in three,
one file each). About ``good_fraction`` of the series are good and left untouched; in each other ('bad') series some
files (at least one) get 1 to 3 of the :data:`MUTATIONS`: header fields deleted, wrong value counts, text in
numbers, non-finite values, absurd sizes, truncations, flipped bytes, claimed compressed transfer syntaxes, a wrong
photometric interpretation, duplicate or malformed UIDs, mixed spacings in a series, multi-frame claims. Malformed
values are written as raw text, as a broken file holds them, past pydicom's checks (:func:`set_raw`).

Check (:func:`run_and_check`): each tool runs on the good series alone (the clean run) and on the whole corpus.
Required: no traceback and no library warning on the console, exit status 0 or 1 (never 2: good series exist),
every good series produced and identical to the clean run (DICOM pixel arrays and geometry; LMDB values of every
key, HR and LR), and every file accounted for: per folder, the files of the included or produced series plus the
files of the skipped entries (each with a one-line reason) equal the files on disk.

Everything depends on the seed only: the same seed builds the same corpus, file for file.
"""
import contextlib
import copy
import io
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.tag import Tag
from pydicom.uid import (JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless, MPEG2MPML, DeflatedExplicitVRLittleEndian,
                         ExplicitVRLittleEndian, HTJ2KLossless, RLELossless, UID)

from mrsr_plugin.mrio.lmdb import read_lmdb

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROSTATE = os.path.join(REPO, 'datasets', 'prostate3t')
# pydicom's MR test files that load here: (name, files per series built from it)
PYDICOM_SOURCES = [('MR_small.dcm', 3), ('MR_small_implicit.dcm', 3), ('MR_small_bigendian.dcm', 3),
                   ('MR_small_RLE.dcm', 3), ('emri_small.dcm', 1), ('emri_small_big_endian.dcm', 1),
                   ('emri_small_RLE.dcm', 1)]
PROSTATE_SLICES = 4  # neighbouring slices per Prostate-3T series
TRACEBACK = 'Traceback (most recent call last)'
MAX_FAILURES_SHOWN = 10


# --- sources ---------------------------------------------------------------------------------------------------------


@dataclass
class Source:
    """A template series: its datasets in slice order, pixels included."""
    name: str
    datasets: list


def _crop(ds, crop):
    """Centre crop of a native little-endian slice to ``crop`` x ``crop``, its position moved to the new first
    pixel."""
    pixels = ds.pixel_array
    r0, c0 = (pixels.shape[0] - crop) // 2, (pixels.shape[1] - crop) // 2
    ds.PixelData = np.ascontiguousarray(pixels[r0:r0 + crop, c0:c0 + crop]).tobytes()
    ds.Rows = ds.Columns = crop
    if ds.get('ImagePositionPatient') and ds.get('ImageOrientationPatient') and ds.get('PixelSpacing'):
        cosines = np.asarray(ds.ImageOrientationPatient, float)
        row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
        position = (np.asarray(ds.ImagePositionPatient, float) + c0 * column_spacing * cosines[:3] +
                    r0 * row_spacing * cosines[3:])
        ds.ImagePositionPatient = [round(float(v), 4) for v in position]
    return ds


def load_sources(prostate=PROSTATE, crop=64):
    """The template series (see the module docstring); Prostate-3T where ``prostate`` exists."""
    sources = []
    if prostate and os.path.isdir(prostate):
        for patient in sorted(os.listdir(prostate)):
            files = sorted(os.path.join(folder, name) for folder, _, names in os.walk(os.path.join(prostate, patient))
                           for name in names if name.endswith('.dcm'))
            middle = len(files) // 2 - PROSTATE_SLICES // 2
            datasets = [_crop(pydicom.dcmread(path), crop) for path in files[middle:middle + PROSTATE_SLICES]]
            sources.append(Source(patient, datasets))
    for name, count in PYDICOM_SOURCES:
        path = get_testdata_file(name, download=False)
        if path is None:
            continue
        template = pydicom.dcmread(path)
        datasets = []
        for i in range(count):
            ds = copy.deepcopy(template)
            if count > 1:  # a series along the normal; native little-endian slices also get their own pixels
                ds.ImagePositionPatient = [0.0, 0.0, 3.0 * i]
                ds.InstanceNumber = i + 1
                if ds.file_meta.TransferSyntaxUID.is_little_endian and not ds.file_meta.TransferSyntaxUID.is_compressed:
                    ds.PixelData = (ds.pixel_array + 100 * i).astype(ds.pixel_array.dtype).tobytes()
            datasets.append(ds)
        sources.append(Source(os.path.splitext(name)[0], datasets))
    return sources


def _new_uid(rng):
    """A UID from the seeded generator (pydicom's generate_uid is random): 2.25.<128-bit integer>."""
    return '2.25.' + str(int.from_bytes(rng.bytes(16), 'big'))


def fresh_copy(source, rng, patient):
    """Copies of a source's datasets as a new series of a new patient: new study, series and instance UIDs."""
    study, series = _new_uid(rng), _new_uid(rng)
    copies = []
    for ds in source.datasets:
        ds = copy.deepcopy(ds)
        ds.PatientID, ds.PatientName = patient, f'Fuzz^{patient}'
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _new_uid(rng)
        ds.SeriesDescription = f't2 {source.name}'
        copies.append(ds)
    return copies


# --- mutations -------------------------------------------------------------------------------------------------------


def set_raw(container, keyword, text):
    """Store ``text`` as the value of ``keyword`` in ``container`` as a broken file holds it: raw bytes that pydicom
    neither checks nor converts before it writes them."""
    tag = Tag(tag_for_keyword(keyword))
    vr = dictionary_VR(tag)
    value = text.encode('latin-1')
    if len(value) % 2:
        value += b'\0' if vr == 'UI' else b' '
    container._dict[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)


def _holder(ds, keyword, rng):
    """The dataset that holds ``keyword``: ``ds`` itself, or an item of a functional group of an enhanced file."""
    if keyword in ds:
        return ds
    items = []
    for groups in ('SharedFunctionalGroupsSequence', 'PerFrameFunctionalGroupsSequence'):
        for group in ds.get(groups) or []:
            for element in group:
                if element.VR == 'SQ':
                    items += [item for item in element.value if keyword in item]
    return items[rng.integers(len(items))] if items else ds


def _int(value, default):
    """``value`` as an int, or ``default`` where an earlier mutation made it something else."""
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        return default


def _float(value, default):
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _values(container, keyword):
    value = container.get(keyword)
    if value is None or value == '':
        return []
    return [str(v) for v in value] if isinstance(value, (list, pydicom.multival.MultiValue)) else [str(value)]


DELETABLE = ['PixelSpacing', 'ImagePositionPatient', 'ImageOrientationPatient', 'RescaleSlope', 'RescaleIntercept',
             'SOPClassUID', 'SOPInstanceUID', 'SeriesInstanceUID', 'StudyInstanceUID', 'PatientID', 'Rows', 'Columns',
             'BitsAllocated', 'BitsStored', 'HighBit', 'PixelRepresentation', 'SamplesPerPixel',
             'PhotometricInterpretation', 'PixelData', 'Modality', 'InstanceNumber', 'SeriesDescription',
             'SliceLocation', 'NumberOfFrames']
COUNTS = {'PixelSpacing': (1, 3), 'ImagePositionPatient': (2, 4), 'ImageOrientationPatient': (0, 5, 7),
          'RescaleSlope': (2, ), 'RescaleIntercept': (2, )}
NUMERIC = ['PixelSpacing', 'ImagePositionPatient', 'ImageOrientationPatient', 'RescaleSlope', 'RescaleIntercept',
           'SliceLocation', 'InstanceNumber', 'NumberOfFrames']
TEXTS = ['abc', '1.2.3', '--', '1e', '0x10', ' ', 'NaN%']
NON_FINITE = ['nan', 'inf', '-inf', 'NaN', '1e999']
CLAIMED = [JPEGBaseline8Bit, JPEG2000Lossless, JPEGLSLossless, RLELossless, MPEG2MPML, HTJ2KLossless,
           DeflatedExplicitVRLittleEndian]
PHOTOMETRIC = ['RGB', 'YBR_FULL', 'PALETTE COLOR', 'MONOCHROME3', 'monochrome2', '']


def _delete(ds, rng, siblings):
    keyword = DELETABLE[rng.integers(len(DELETABLE))]
    holder = _holder(ds, keyword, rng)
    if keyword in holder:
        del holder[keyword]
    return f'deleted {keyword}'


def _count(ds, rng, siblings):
    keyword = list(COUNTS)[rng.integers(len(COUNTS))]
    count = COUNTS[keyword][rng.integers(len(COUNTS[keyword]))]
    holder = _holder(ds, keyword, rng)
    values = (_values(holder, keyword) or ['1']) * 7
    set_raw(holder, keyword, '\\'.join(values[:count]))
    return f'{keyword} with {count} values'


def _text(ds, rng, siblings):
    keyword, text = NUMERIC[rng.integers(len(NUMERIC))], TEXTS[rng.integers(len(TEXTS))]
    holder = _holder(ds, keyword, rng)
    values = _values(holder, keyword) or ['1']
    values[rng.integers(len(values))] = text
    set_raw(holder, keyword, '\\'.join(values))
    return f'{keyword} with text {text!r}'


def _non_finite(ds, rng, siblings):
    keyword = NUMERIC[rng.integers(6)]  # the decimal ones
    holder = _holder(ds, keyword, rng)
    values = _values(holder, keyword) or ['1']
    text = NON_FINITE[rng.integers(len(NON_FINITE))]
    values[rng.integers(len(values))] = text
    set_raw(holder, keyword, '\\'.join(values))
    return f'{keyword} with {text}'


def _size(ds, rng, siblings):
    choice = rng.integers(7)
    if choice == 0:
        keyword = ('Rows', 'Columns')[rng.integers(2)]
        side = min(_int(ds.get(keyword), 1), 32767)
        value = [0, 1, 65535, 2 * side, side + 1][rng.integers(5)]
        setattr(ds, keyword, value)
    elif choice == 1:
        keyword, value = 'BitsAllocated', [0, 1, 7, 12, 64][rng.integers(5)]
        ds.BitsAllocated = value
    elif choice == 2:
        keyword, value = 'BitsStored', [0, _int(ds.get('BitsAllocated'), 16) + 1][rng.integers(2)]
        ds.BitsStored = value
    elif choice == 3:
        keyword, value = 'SamplesPerPixel', [0, 2, 3][rng.integers(3)]
        ds.SamplesPerPixel = value
    elif choice == 4:
        keyword, value = 'PixelRepresentation', 2
        ds.PixelRepresentation = value
    elif choice == 5:
        keyword, value = 'NumberOfFrames', ['0', '-1', '100000'][rng.integers(3)]
        set_raw(ds, keyword, value)
    else:
        keyword, value = 'PixelSpacing', ['0\\0', '-1\\-1', '1e308\\1e308'][rng.integers(3)]
        set_raw(_holder(ds, keyword, rng), keyword, value)
    return f'{keyword} {value}'


def _claim_compressed(ds, rng, siblings):
    ds.file_meta.TransferSyntaxUID = CLAIMED[rng.integers(len(CLAIMED))]
    return f'claims {ds.file_meta.TransferSyntaxUID.name}'


def _photometric(ds, rng, siblings):
    value = PHOTOMETRIC[rng.integers(len(PHOTOMETRIC))]
    set_raw(ds, 'PhotometricInterpretation', value)
    return f'PhotometricInterpretation {value!r}'


def _duplicate_uid(ds, rng, siblings):
    others = [s for s in siblings if s is not ds]
    if others:
        ds.SOPInstanceUID = others[rng.integers(len(others))].SOPInstanceUID
        return 'SOPInstanceUID of another file of its series'
    ds.SOPInstanceUID = ds.SeriesInstanceUID
    return 'SOPInstanceUID equal to its SeriesInstanceUID'


def _bad_uid(ds, rng, siblings):
    keyword = ('SOPClassUID', 'SOPInstanceUID', 'SeriesInstanceUID')[rng.integers(3)]
    value = ['abc', '1..2', '1.2.' + '3' * 70, 'x'][rng.integers(4)]
    set_raw(ds, keyword, value)
    return f'{keyword} {value[:12]!r}'


def _mixed_spacing(ds, rng, siblings):
    holder = _holder(ds, 'PixelSpacing', rng)
    values = [_float(v, 1.0) for v in _values(holder, 'PixelSpacing')] or [1.0, 1.0]
    factor = [0.5, 1.5, 2.0][rng.integers(3)]
    set_raw(holder, 'PixelSpacing', '\\'.join(f'{v * factor:.6g}' for v in values))
    return f'PixelSpacing x{factor}'


def _multi_frame(ds, rng, siblings):
    frames = max(_int(ds.get('NumberOfFrames'), 1), 1) + int(rng.integers(1, 5))
    set_raw(ds, 'NumberOfFrames', str(frames))
    return f'NumberOfFrames {frames}'


def _orientation(ds, rng, siblings):
    value = ['1\\1\\0\\0\\1\\0', '0\\0\\0\\0\\0\\0', '1\\0\\0\\1\\0\\0', '2\\0\\0\\0\\2\\0'][rng.integers(4)]
    set_raw(_holder(ds, 'ImageOrientationPatient', rng), 'ImageOrientationPatient', value)
    return f'ImageOrientationPatient {value!r}'


def _zero_slope(ds, rng, siblings):
    holder = _holder(ds, 'RescaleSlope', rng)
    set_raw(holder, 'RescaleSlope', '0')
    if 'RescaleIntercept' not in holder:
        set_raw(holder, 'RescaleIntercept', '0')
    return 'RescaleSlope 0'


def _truncate(data, rng):
    cut = int(rng.integers(0, len(data)))
    return data[:cut], f'truncated to {cut} of {len(data)} bytes'


def _flip(data, rng):
    data = bytearray(data)
    count = int(rng.integers(1, 9))
    header = rng.random() < 0.7  # mostly in the first 2 KB, where the header is
    for _ in range(count):
        position = int(rng.integers(0, min(len(data), 2048) if header else len(data)))
        data[position] ^= 1 << int(rng.integers(8))
    return bytes(data), f'{count} bits flipped' + (' in the header' if header else '')


# name -> (function, applies to: 'header' (a Dataset, before writing) or 'bytes' (the written file))
MUTATIONS = {
    'delete': (_delete, 'header'), 'count': (_count, 'header'), 'text': (_text, 'header'),
    'non_finite': (_non_finite, 'header'), 'size': (_size, 'header'), 'compressed': (_claim_compressed, 'header'),
    'photometric': (_photometric, 'header'), 'duplicate_uid': (_duplicate_uid, 'header'),
    'bad_uid': (_bad_uid, 'header'), 'mixed_spacing': (_mixed_spacing, 'header'),
    'multi_frame': (_multi_frame, 'header'), 'orientation': (_orientation, 'header'),
    'zero_slope': (_zero_slope, 'header'), 'truncate': (_truncate, 'bytes'), 'flip': (_flip, 'bytes'),
}


def encode(ds, encoding=None):
    """The bytes of ``ds`` as a DICOM file in ``encoding`` (a transfer syntax; default: the one its file meta
    claims), whatever its file meta claims: a compressed transfer syntax over native pixel data, too."""
    real = UID(encoding or ds.file_meta.TransferSyntaxUID)
    if not real.is_transfer_syntax:  # a UID pydicom does not know: the body as most files are
        real = ExplicitVRLittleEndian
    out = DicomBytesIO()
    out.write(b'\0' * 128 + b'DICM')
    write_file_meta_info(out, ds.file_meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = real.is_little_endian, real.is_implicit_VR
    write_dataset(body, ds)
    return out.getvalue() + body.getvalue()


def mutate(ds, siblings, rng, names):
    """Apply the :data:`MUTATIONS` ``names`` to ``ds`` (header ones first) and encode it; returns (bytes, their
    descriptions)."""
    encoding, done = UID(ds.file_meta.TransferSyntaxUID), []
    for name in names:
        function, kind = MUTATIONS[name]
        if kind == 'header':
            done.append(function(ds, rng, siblings))
    data = encode(ds, encoding)
    for name in names:
        function, kind = MUTATIONS[name]
        if kind == 'bytes':
            data, description = function(data, rng)
            done.append(description)
    return data, done


# --- corpus ----------------------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    """A fuzz corpus: ``root`` (every series) and ``clean`` (the good series alone, at the same relative paths)."""
    root: str
    clean: str
    good: list = field(default_factory=list)  # folders of good series, relative to root
    bad: dict = field(default_factory=dict)  # folder of a bad series -> {file name: [mutation descriptions]}
    files: int = 0

    @property
    def series(self):
        return len(self.good) + len(self.bad)


def build_corpus(folder, n, seed, sources, good_fraction=0.2, mutate_fraction=0.6):
    """At least ``n`` files in ``folder/corpus`` (series in folders ``S0000``...) and the good ones again in
    ``folder/clean``; see the module docstring."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # pydicom's notes on the values written here: broken on purpose
        return _build_corpus(folder, n, seed, sources, good_fraction, mutate_fraction)


def _build_corpus(folder, n, seed, sources, good_fraction, mutate_fraction):
    rng = np.random.default_rng(seed)
    corpus = Corpus(os.path.join(folder, 'corpus'), os.path.join(folder, 'clean'))
    plans = []  # (source, good); at least one good and one bad series
    while sum(len(sources[s].datasets) for s, _ in plans) < n or len({good for _, good in plans}) < 2:
        plans.append((int(rng.integers(len(sources))), bool(rng.random() < good_fraction)))
    for index, (source, good) in enumerate(plans):
        name = f'S{index:04d}'
        datasets = fresh_copy(sources[source], rng, f'FZ{seed}-{index:04d}')
        roots = [corpus.root, corpus.clean] if good else [corpus.root]
        for root in roots:
            os.makedirs(os.path.join(root, name))
        mutated = {}
        if not good:
            chosen = rng.random(len(datasets)) < mutate_fraction
            chosen[rng.integers(len(datasets))] = True
            for i in np.flatnonzero(chosen):
                names = list(rng.choice(sorted(MUTATIONS), int(rng.integers(1, 4)), replace=False))
                mutated[i] = names
        for i, ds in enumerate(datasets):
            file_name = f'IM{i + 1:04d}.dcm'
            if i in mutated:
                data, done = mutate(ds, datasets, rng, mutated[i])
                corpus.bad.setdefault(name, {})[file_name] = done
            else:
                data = encode(ds)
            for root in roots:
                with open(os.path.join(root, name, file_name), 'wb') as f:
                    f.write(data)
            corpus.files += 1
        if good:
            corpus.good.append(name)
        else:
            corpus.bad.setdefault(name, {})
    return corpus


# --- running the tools -----------------------------------------------------------------------------------------------


def tiny_model(folder):
    """A tiny MRDABNet x2 (tinyrun.TINY_G, 1 channel, seeded weights) saved as a BasicSR checkpoint and option file;
    returns (weights, option file)."""
    import torch
    import yaml

    from mrsr_plugin.archs.mrdab_arch import MRDABNet
    from mrsr_plugin.apps.tinyrun import TINY_G
    network_g = dict(type='MRDABNet', num_in_ch=1, num_out_ch=1, upscale=2, **TINY_G)
    torch.manual_seed(0)
    weights, opt = os.path.join(folder, 'tiny_x2.pth'), os.path.join(folder, 'tiny_x2.yml')
    torch.save({'params': MRDABNet(**{k: v for k, v in network_g.items() if k != 'type'}).state_dict()}, weights)
    with open(opt, 'w') as f:
        yaml.safe_dump({'scale': 2, 'network_g': network_g}, f)
    return weights, opt


def prepare_args(source, output):
    return [source, output, '--scales', '2', '4', '--split-ratio', '1', '1', '1', '--series-pattern', '', '--plane',
            'any', '--keep-patient-ids', '--secret-file', os.path.join(os.path.dirname(output), 'secret')]


def infer_args(source, output, model):
    return ['-i', source, '-o', output, '-w', model[0], '-opt', model[1]]


def run_tool(module, args, in_process):
    """``python -m module args`` -> (exit status, console output, seconds): in a fresh interpreter as a user runs
    it, or in this process with stdout and stderr captured (faster; the test suite's way)."""
    start = time.perf_counter()
    if not in_process:
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
        proc = subprocess.run([sys.executable, '-m', module, *map(str, args)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env)
        return proc.returncode, proc.stdout, time.perf_counter() - start
    import importlib
    main = importlib.import_module(module).main
    console = io.StringIO()
    status = 0
    with contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
        try:
            main([str(a) for a in args])
        except SystemExit as exit_:
            status = exit_.code
        except Exception:  # what the interpreter would print and exit with
            console.write(traceback.format_exc())
            status = 1
    return status, console.getvalue(), time.perf_counter() - start


def _lmdb_or_nothing(path):
    return read_lmdb(path) if os.path.isdir(path) else {}


def _prepared_values(output, report):
    """{(series folder, LMDB name, slice key without its case): value} of a prepared output."""
    case_of = {entry['case']: entry['path'] for entry in report['included']}
    values = {}
    for split in ('train', 'val', 'test'):
        folder = os.path.join(output, split)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if name.endswith('.lmdb'):
                for key, value in _lmdb_or_nothing(os.path.join(folder, name)).items():
                    case, _, rest = key.partition('_')
                    values[case_of[case], name, rest] = value
    return values


def _infer_outputs(output, report):
    """{source folder: {file name: (pixel array, ImagePositionPatient, PixelSpacing, referenced source UID)}}."""
    found = {}
    for entry in report['produced']:
        folder = os.path.join(output, entry['output'])
        found[entry['source']] = {
            name: (ds.pixel_array, [str(v) for v in ds.get('ImagePositionPatient') or []],
                   [str(v) for v in ds.get('PixelSpacing') or []],
                   ds.SourceImageSequence[0].ReferencedSOPInstanceUID)
            for name in sorted(os.listdir(folder)) if name.endswith('.dcm')
            for ds in [pydicom.dcmread(os.path.join(folder, name))]}
    return found


def _same(a, b):
    return all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(a, b))


def _accounting(corpus, report, used_key, path_key):
    """Folders whose files on disk differ from the files the report accounts for: {folder: (on disk, accounted)}."""
    accounted = {}
    for entry in report[used_key]:
        accounted[entry[path_key]] = accounted.get(entry[path_key], 0) + entry['files']
    for entry in report['skipped']:
        folder = entry['path'] if entry['path'] in corpus.bad or entry['path'] in corpus.good else os.path.dirname(
            entry['path'])
        accounted[folder] = accounted.get(folder, 0) + entry['files']
    wrong = {}
    for folder in corpus.good + list(corpus.bad):
        on_disk = len(os.listdir(os.path.join(corpus.root, folder)))
        if accounted.get(folder, 0) != on_disk:
            wrong[folder] = (on_disk, accounted.get(folder, 0))
    return wrong


def _console_problems(console):
    lines = console.splitlines()
    return {'tracebacks': console.count(TRACEBACK),
            'warnings': sum(1 for line in lines if 'Warning:' in line or 'warn_and_log' in line)}


def run_and_check(corpus, work, model, in_process=False, tools=('prepare', 'infer')):
    """Both tools on ``corpus.clean`` (in this process) and on ``corpus.root`` (see ``in_process``); returns
    {tool: figures and the failures found} (module docstring)."""
    results = {}
    for tool in tools:
        module = f'mrsr_plugin.cli.{tool}'
        args = (prepare_args if tool == 'prepare' else lambda s, o: infer_args(s, o, model))
        clean_out, fuzz_out = os.path.join(work, f'{tool}_clean'), os.path.join(work, f'{tool}_fuzz')
        clean_status, clean_console, _ = run_tool(module, args(corpus.clean, clean_out), in_process=True)
        status, console, seconds = run_tool(module, args(corpus.root, fuzz_out), in_process)
        failures = []
        if clean_status != 0:
            failures.append(f'clean run: exit status {clean_status}: {clean_console[-2000:]}')
        if status not in (0, 1):
            failures.append(f'exit status {status}: {console[-2000:]}')
        report_name = 'report.json' if tool == 'prepare' else 'mrsr-infer-report.json'
        try:
            clean = json.load(open(os.path.join(clean_out, report_name)))
            report = json.load(open(os.path.join(fuzz_out, report_name)))
        except OSError as err:
            results[tool] = dict(status=status, seconds=seconds, failures=failures + [f'no report: {err}'],
                                 **_console_problems(console))
            continue
        used_key, path_key = ('included', 'path') if tool == 'prepare' else ('produced', 'source')
        produced = {entry[path_key] for entry in report[used_key]}
        missing = sorted(set(corpus.good) - produced)
        if missing:
            failures.append(f'good series not produced: {missing[:MAX_FAILURES_SHOWN]}')
        if tool == 'prepare':
            clean_values, values = _prepared_values(clean_out, clean), _prepared_values(fuzz_out, report)
            differ = sorted({key[0] for key, value in clean_values.items() if values.get(key) != value})
        else:
            clean_values, values = _infer_outputs(clean_out, clean), _infer_outputs(fuzz_out, report)
            differ = sorted(folder for folder, files in clean_values.items() if set(files) != set(values.get(
                folder, {})) or not all(_same(files[n], values[folder][n]) for n in files))
        if differ:
            failures.append(f'good series that differ from the clean run: {differ[:MAX_FAILURES_SHOWN]}')
        clean_folders = {key[0] for key in clean_values} if tool == 'prepare' else set(clean_values)
        if clean_folders != set(corpus.good):
            failures.append(f'the clean run produced {len(clean_folders)} of the {len(corpus.good)} good series')
        wrong = _accounting(corpus, report, used_key, path_key)
        if wrong:
            failures.append(f'files not accounted for (folder: on disk, in the report): '
                            f'{dict(list(wrong.items())[:MAX_FAILURES_SHOWN])}')
        bad_reasons = [entry for entry in report['skipped'] if not entry['reason'].strip() or '\n' in entry['reason']]
        if bad_reasons:
            failures.append(f'skips without a one-line reason: {bad_reasons[:MAX_FAILURES_SHOWN]}')
        problems = _console_problems(console)
        if problems['tracebacks'] or problems['warnings']:
            failures.append(f'{problems["tracebacks"]} tracebacks and {problems["warnings"]} warnings on the console: '
                            f'{console[-3000:]}')
        faults = sum(1 for entry in report['skipped'] if entry['fault'])
        if status != (1 if faults else 0):
            failures.append(f'exit status {status} with {faults} inputs skipped for a fault')
        results[tool] = dict(status=status, seconds=seconds, produced=len(report[used_key]),
                             skipped=len(report['skipped']), faults=faults,
                             skipped_files=sum(entry['files'] for entry in report['skipped']),
                             good_produced=len(set(corpus.good) & produced), failures=failures, **problems)
    return results


def fuzz(work, n, seed, sources, model, in_process=False, good_fraction=0.2, tools=('prepare', 'infer')):
    """Build the corpus of ``seed`` in ``work`` (emptied first), run and check both tools; returns the figures."""
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    start = time.perf_counter()
    corpus = build_corpus(work, n, seed, sources, good_fraction)
    built = time.perf_counter() - start
    results = run_and_check(corpus, work, model, in_process, tools)
    return {'seed': seed, 'files': corpus.files, 'series': corpus.series, 'good_series': len(corpus.good),
            'bad_series': len(corpus.bad), 'mutated_files': sum(len(f) for f in corpus.bad.values()),
            'build_seconds': built, 'wall_seconds': time.perf_counter() - start, 'tools': results,
            'ok': all(not r['failures'] for r in results.values())}
