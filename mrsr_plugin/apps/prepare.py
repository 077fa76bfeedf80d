"""DICOM downloads and volume files (or folders of PNG/TIFF slices) -> patient-split HR/LR LMDBs that BasicSR reads.

Output layout (``OUT``)::

    OUT/{train,val,test}/HR.lmdb           lossless 16-bit (or 8-bit) single-channel PNGs, BasicSR LMDB layout
    OUT/{train,val,test}/LR_x{s}.lmdb      the same keys, degraded and down-sampled by s
    OUT/{train,val,test}/HR/, LR_x{s}/     the same as PNG files, with --png
    OUT/split.json                         which case went to which split (patients pseudonymised by default)
    OUT/report.json                        what was included, skipped (and why) and noted, and every parameter

``.mrsr_secret`` (``--secret-file``), the key of the pseudonyms, lies beside ``OUT``, not inside it (``OUT`` is what
gets shared). Pseudonyms, de-identification of the reports, volume files, bad input and the exit status: see
docs/data.md.

A bad input never costs a good one: each selected series (or volume file, or patient folder of images) is loaded,
normalised and cached as its quantised HR in the staging folder, one at a time (pass 1), any error in that work being
that input's skip (:class:`mrsr_plugin.errors.isolate`); only the patients with a series that loaded are split, and
their slices degraded and written (pass 2). Memory holds one volume at a time. The tree is built in a hidden sibling
folder and renamed into place at the end (:mod:`mrsr_plugin.fsutil`).
"""
import csv
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import shutil
import stat
import sys
from collections import Counter

import numpy as np
import yaml

from mrsr_plugin.errors import InputFileError, MRSRUserError, RunStopError, isolate
from mrsr_plugin.data.degradations import DegradationConfig, degrade, rng_for
from mrsr_plugin.mrio.dicom import (COLOUR_IMAGE, IMAGE_EXTENSIONS, Skipped, list_image_files, load_series,
                                    print_skipped, read_image, scan_dicom_tree)
from mrsr_plugin.data.mr_image import encode_png, quantize
from mrsr_plugin.mrio.volume import (list_volume_files, read_volume, read_volume_header,
                                        volume_extension, volume_stem, without_volume_files)
from mrsr_plugin.fsutil import describe_os_error, write_atomically
from mrsr_plugin.mrio.intensity import normalise
from mrsr_plugin.mrio.lmdb import LmdbImageWriter, write_file

SPLITS = ('train', 'val', 'test')
SECRET_NAME = '.mrsr_secret'
# a DICOM UID: digits and at least 3 dots, or a UUID-derived 2.25.<integer>
UID_TOKEN = re.compile(r'(?<![\d.])(?:[0-2](?:\.\d+){3,}|2\.25\.\d+)(?!\.?\d)')


def legacy_pseudonym(patient_id):
    """Unsalted ``sha256:`` pseudonym of earlier versions: reversible by hashing guessed IDs, so only read (split
    files written by them keep working), never written."""
    return 'sha256:' + hashlib.sha256(patient_id.encode()).hexdigest()[:16]


def pseudonym(patient_id, secret):
    """``hmac:`` and 16 hex digits of HMAC-SHA256(secret, PatientID)."""
    return 'hmac:' + hmac.new(secret, patient_id.encode(), hashlib.sha256).hexdigest()[:16]


def default_secret_file(output):
    """``.mrsr_secret`` beside the output folder: outside what is shared, shared by the outputs of one place."""
    return os.path.join(os.path.dirname(os.path.abspath(output)), SECRET_NAME)


def read_secret(path, create):
    """The pseudonym key in ``path``; a new random one is written there (0600) when absent and ``create``."""
    try:
        with open(path, 'rb') as f:
            secret = f.read().strip()
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if not create:
            raise MRSRUserError(f'{path}: no such secret file (the key of the pseudonyms; see --secret-file)')
        secret = secrets.token_hex(32).encode()
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, 'wb') as f:
                f.write(secret + b'\n')
        except FileExistsError:  # another run created it meanwhile
            return read_secret(path, create=False)
        except OSError as err:
            raise MRSRUserError(describe_os_error(err, path)) from err
        print(f'created {path}: the key of the pseudonyms in split.json and report.json; keep it private, beside '
              'the datasets it serves, and never share it with them')
        return secret
    except OSError as err:
        raise MRSRUserError(describe_os_error(err, path)) from err
    if len(secret) < 16:
        raise MRSRUserError(f'{path}: a secret of {len(secret)} bytes; pseudonyms need at least 16')
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f'warning: {path} is readable by others (mode {stat.S_IMODE(mode):04o}); chmod 600 it',
              file=sys.stderr)
    return secret


class Redactor:
    """What report.json may say about inputs: paths relative to the input folder, with their first part and every
    known PatientID pseudonymised and DICOM UIDs replaced by keyed hashes. Without a secret (--keep-patient-ids):
    relative paths, nothing replaced."""

    def __init__(self, root, patient_ids, secret):
        self.roots = sorted({root, os.path.abspath(root)}, key=len, reverse=True)
        self.secret = secret
        ids = sorted({p for p in patient_ids if len(p) >= 3}, key=len, reverse=True)  # shorter ones hit anything
        self.ids = re.compile('|'.join(map(re.escape, ids))) if ids and secret else None

    def patient(self, patient_id):
        return patient_id if self.secret is None else pseudonym(patient_id, self.secret)

    def text(self, text):
        for root in self.roots:
            text = text.replace(root.rstrip(os.sep) + os.sep, '')
        if self.secret is None:
            return text
        if self.ids is not None:
            text = self.ids.sub(lambda m: pseudonym(m.group(), self.secret), text)
        return UID_TOKEN.sub(
            lambda m: 'uid-' + hmac.new(self.secret, m.group().encode(), hashlib.sha256).hexdigest()[:12], text)

    def path(self, path):
        absolute = os.path.abspath(path)
        root = os.path.abspath(self.roots[0])
        if absolute != root and os.path.commonpath([absolute, root]) != root:
            return self.text(path)
        parts = os.path.relpath(absolute, root).split(os.sep)
        if self.secret is not None and parts[0] != '.':  # the patient folder, or a file directly in the root
            if len(parts) > 1:
                stem, ext = parts[0], ''
            elif volume_extension(parts[0]):  # prostate_00.nii.gz: the stem is its patient
                stem, ext = volume_stem(parts[0]), volume_extension(parts[0])
            else:
                stem, ext = os.path.splitext(parts[0])
            parts[0] = pseudonym(stem, self.secret) + ext
        return '/'.join(parts[:1] + [self.text(part) for part in parts[1:]])

    def skipped(self, skipped):
        return skipped.report_entry(self.path(skipped.path), self.text)


def assign_splits(patients, ratio, seed):
    """Shuffle the patients with ``seed`` and cut them ``ratio`` (e.g. 8:1:1); every split gets one when possible."""
    order = sorted(patients)
    np.random.default_rng(seed).shuffle(order)
    n = len(order)
    counts = [int(round(n * r / sum(ratio))) for r in ratio]
    for i in range(3):  # no empty split when there are enough patients and the ratio asks for one
        if counts[i] == 0 and ratio[i] > 0 and n >= 3:
            counts[int(np.argmax(counts))] -= 1
            counts[i] = 1
    counts[0] = n - counts[1] - counts[2]
    bounds = np.cumsum([0] + counts)
    return {p: SPLITS[i] for i in range(3) for p in order[bounds[i]:bounds[i + 1]]}


def read_split_file(path):
    """``patients`` of a split.json: {PatientID or pseudonym: 'train' | 'val' | 'test'}."""
    try:
        with open(path) as f:
            patients = json.load(f)['patients']
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MRSRUserError(f'{path}: not a readable split file with a "patients" mapping ({err!r})') from err
    bad = {p: s for p, s in patients.items() if s not in SPLITS}
    if bad:
        raise MRSRUserError(f'{path}: splits must be one of {SPLITS}, got {bad}')
    return patients


def split_of_patient(fixed, patient_id, secret):
    """The split a split file gives a patient: under the PatientID, its pseudonym or its legacy ``sha256:`` one."""
    keys = [patient_id, legacy_pseudonym(patient_id)] + ([pseudonym(patient_id, secret)] if secret else [])
    return next((fixed[key] for key in keys if key in fixed), None)


def _load_images(members, skipped):
    """(name, path) pairs of one patient's PNG/TIFF slices -> ((S, H, W) float32, the bit depth's peak); unusable
    images go to ``skipped``."""
    slices = []
    for _, path in members:
        img = read_image(path)
        if isinstance(img, str):
            skipped.append(Skipped(path, img, fault=img != COLOUR_IMAGE))
        else:
            slices.append(img)
    if not slices:
        raise InputFileError(members[0][1], 'no usable image')
    shapes = sorted({img.shape for img in slices})
    if len(shapes) > 1:
        raise InputFileError(members[0][1], f'mixed slice sizes {shapes}')
    return np.stack(slices).astype(np.float32), float(np.iinfo(slices[0].dtype).max)


def discover(args, skipped, label, patients=None):
    """Input tree -> (volumes to load, 'scans' or 'images'), reading DICOM and volume file headers only and no
    image at all.

    A volume is a dict: 'patient', 'path' (its series folder, volume file or patient folder), 'load' (callable ->
    ((S, H, W) float32, peak or None)), 'info' (for the report), 'warnings'. DICOM series and volume files are
    'scans' and may be mixed; PNG/TIFF slices are read only where there are none. ``patients``: the
    --patients-csv mapping (:func:`read_patients_csv`). Inputs left out go to ``skipped``.
    """
    series, scan_skipped = scan_dicom_tree(args.input, progress=not args.quiet)
    volume_files = list_volume_files(args.input)
    if series or volume_files:
        skipped += without_volume_files(scan_skipped, volume_files)
        chosen = (select_dicom(series, args, skipped, label) +
                  select_volume_files(volume_files, args, skipped, label, patients))
        if not chosen:
            raise MRSRUserError(f'{args.input}: {len(series)} MR series and {len(volume_files)} volume files found, '
                                f'none selected (--series-pattern {args.series_pattern!r}, --plane {args.plane}, '
                                '--volume-channel, --patients-csv); reasons above')
        return chosen, 'scans'
    image_skipped = []
    files = list_image_files(args.input, image_skipped)
    # images are 'not DICOM' to the scan; what the walk itself reported (broken links...) comes again
    skipped += [s for s in scan_skipped if not s.path.lower().endswith(IMAGE_EXTENSIONS)] + image_skipped
    if not files:
        raise MRSRUserError(f'{args.input}: found no MR DICOM series and no PNG/TIFF slices '
                            f'({len(skipped)} files skipped)')
    by_patient = {}
    for name, path in files:  # the first folder level is the patient; a flat folder makes each image a patient
        patient = name.split('/')[0] if '/' in name else name
        folder = os.path.join(args.input, patient) if '/' in name else path
        by_patient.setdefault((patient, folder), []).append((name, path))
    return [{
        'patient': patient, 'path': folder, 'load': lambda m=members: _load_images(m, skipped), 'warnings': [],
        'files': len(members), 'first_file': members[0][1], 'info': {'slices': len(members), 'source': 'images'}
    } for (patient, folder), members in sorted(by_patient.items())], 'images'


def select_dicom(series, args, skipped, label):
    """The series that --series-pattern and --plane select, as volumes (see :func:`discover`)."""
    pattern = re.compile(args.series_pattern, re.IGNORECASE)
    chosen = []
    for s in series:
        reasons = []
        if not pattern.search(s.description):
            reasons.append(f'SeriesDescription {s.description!r} does not match {args.series_pattern!r}')
        if args.plane != 'any' and s.plane != args.plane:
            reasons.append(f'{s.plane} plane, not {args.plane}')
        if reasons:
            skipped.append(Skipped(os.path.dirname(s.files[0]), f'series not selected ({len(s.files)} files): ' +
                                   '; '.join(reasons), s.patient_id, files=len(s.files), fault=False))
        else:
            chosen.append(s)
    by_patient = {}
    for s in chosen:
        by_patient.setdefault(s.patient_id, []).append(s)
    for patient, items in sorted(by_patient.items()):
        names = ', '.join(f'{s.description!r} ({s.num_slices} slices, {s.rows}x{s.columns})' for s in items)
        if not args.quiet:
            print(f'{label(patient)}: {names}')
    return [{
        'patient': s.patient_id, 'path': os.path.dirname(s.files[0]), 'load': lambda s=s: (load_series(s), None),
        'warnings': s.warnings, 'messages': s.messages, 'files': len(s.files), 'first_file': s.files[0],
        'info': {'description': s.description, 'plane': s.plane, 'slices': s.num_slices, 'size': [s.rows, s.columns],
                 'source': 'dicom'}
    } for s in chosen]


def read_patients_csv(path):
    """``--patients-csv``: a CSV file with a header row naming at least the columns ``file`` and ``patient`` ->
    {file: patient}; ``file`` is a volume file's path relative to the input folder, or its name alone."""
    try:
        with open(path, newline='') as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader) if {'file', 'patient'} <= set(columns) else None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise MRSRUserError(f'{path}: cannot read the patients CSV ({err})') from err
    if rows is None:
        raise MRSRUserError(f'{path}: the patients CSV needs a header row with the columns file and patient (found: '
                            f'{", ".join(columns) or "nothing"})')
    patients = {}
    for line, row in enumerate(rows, 2):
        file, patient = (row['file'] or '').strip(), (row['patient'] or '').strip()
        if not file or not patient:
            raise MRSRUserError(f'{path}: line {line} has an empty file or patient')
        if patients.setdefault(file, patient) != patient:
            raise MRSRUserError(f'{path}: {file} is given two patients, {patients[file]} and {patient}')
    return patients


def select_volume_files(paths, args, skipped, label, patients=None):
    """The volume files that --plane and --volume-channel select, as volumes (see :func:`discover`); the patient
    is the file name without its extension, or the one ``patients`` ({file: patient}, from --patients-csv) gives."""
    chosen = []
    for path in paths:
        relative = os.path.relpath(path, args.input).replace(os.sep, '/')
        if patients is None:
            patient = volume_stem(path)
        elif (patient := patients.get(relative, patients.get(os.path.basename(path)))) is None:
            skipped.append(Skipped(path, f'not in {os.path.basename(args.patients_csv)}', fault=False))
            continue
        with isolate() as guard:  # whatever goes wrong reading one file's header skips that file
            header = read_volume_header(path, args.volume_channel)
        if guard.error is not None:
            skipped.append(Skipped.of(guard, path, patient))
            continue
        if args.plane != 'any' and header.plane != args.plane:
            skipped.append(Skipped(path, f'volume not selected: {header.plane} plane, not {args.plane}', patient,
                                   fault=False))
            continue
        z, h, w = header.shape
        if not args.quiet:
            channel = '' if header.channel is None else f', channel {header.channel} of {header.channels}'
            print(f'{label(patient)}: {relative} ({z} slices, {h}x{w}{channel})')
        chosen.append({
            'patient': patient, 'path': path, 'load': lambda h=header: (read_volume(h.path, h.channel).array, None),
            'warnings': [], 'messages': guard.messages, 'first_file': path,
            'info': {'plane': header.plane, 'slices': z, 'size': [h, w], 'channel': header.channel,
                     'source': volume_extension(path).lstrip('.')}
        })
    return chosen


def _load_volume(volume, args, multiple, path):
    """Pass 1 for one input: load, normalise, crop to ``multiple``, choose the slices, cache the quantised HR at
    ``path``; returns what pass 2 needs to know of it."""
    pixels, peak = volume['load']()
    try:
        pixels, window = normalise(pixels, args.normalize, args.percentiles, peak)
    except ValueError as err:
        raise InputFileError(volume.get('first_file', volume['path']), str(err)) from err
    h, w = pixels.shape[1] // multiple * multiple, pixels.shape[2] // multiple * multiple
    if not h or not w:
        raise InputFileError(volume.get('first_file', volume['path']), f'slices of {pixels.shape[1]}x'
                             f'{pixels.shape[2]} are smaller than {multiple}, the least common multiple of --scales')
    pixels = pixels[:, :h, :w]  # top-left crop to a multiple of every scale, as BasicSR's mod_crop
    kept = [i for i in range(len(pixels)) if pixels[i].mean() >= args.min_mean]
    try:
        np.save(path, quantize(pixels, args.bit_depth))  # LR is made from exactly the stored HR
    except OSError as err:  # the output: no other input could be written either
        raise RunStopError(describe_os_error(err, path)) from err
    return dict(volume, cache=path, kept=kept, window=window, cropped_to=[h, w])


def _degradation_config(args):
    try:
        return DegradationConfig.from_dict(load_degradation(args))
    except yaml.YAMLError as err:
        raise MRSRUserError(f'{args.degradation_config}: not a YAML file ({err})'.splitlines()[0]) from err
    except (ValueError, TypeError) as err:
        raise MRSRUserError(f'degradation: {err}') from err


def _report_parameters(args, config):
    parameters = dict(vars(args))
    # file names only: no absolute paths in a shared report
    for key in ('split_file', 'degradation_config', 'patients_csv'):
        if parameters[key]:
            parameters[key] = os.path.basename(parameters[key])
    parameters.update(input='.', output=os.path.basename(os.path.abspath(args.output)), degradation=config.to_dict())
    parameters.pop('secret_file')
    return parameters


class _CachedVolumes:
    """The quantised HR volumes of pass 1, read back (memory-mapped) one at a time: ``volumes[v][i]``."""

    def __init__(self, files):
        self.files, self.index, self.array = files, None, None

    def __getitem__(self, v):
        if v != self.index:
            self.index, self.array = v, np.load(self.files[v], mmap_mode='r')
        return self.array


def build(args):
    """Prepare the LMDBs (see the module docstring); returns the report written to OUT/report.json."""
    out = os.path.abspath(args.output)
    if os.path.exists(out) and not args.overwrite:
        raise MRSRUserError(f'{out} exists; pass --overwrite to replace it')
    if not os.path.isdir(args.input):
        raise MRSRUserError(f'{args.input}: no such folder')
    scales = sorted(set(args.scales))
    multiple = math.lcm(*scales)
    config = _degradation_config(args)
    fixed = read_split_file(args.split_file) if args.split_file else None
    patients = read_patients_csv(args.patients_csv) if args.patients_csv else None
    secret_file = args.secret_file or default_secret_file(out)
    secret = None
    if not args.keep_patient_ids:
        secret = read_secret(secret_file, create=True)
    elif fixed and any(key.startswith('hmac:') for key in fixed):  # matching its pseudonyms needs the key
        secret = read_secret(secret_file, create=False)
    label = (lambda p: p) if args.keep_patient_ids else (lambda p: pseudonym(p, secret))
    skipped = []
    try:
        volumes, source = discover(args, skipped, label, patients)
    except MRSRUserError:
        print_skipped(skipped, args.input)
        raise
    if source == 'scans' and args.normalize == 'none':
        raise MRSRUserError('--normalize none applies to PNG/TIFF input only; DICOM and volume files need '
                            'percentile or minmax')
    if fixed is not None:
        for v in volumes:
            v['split'] = split_of_patient(fixed, v['patient'], secret)
            if v['split'] is None:
                skipped.append(Skipped(v['path'], f'patient not in {os.path.basename(args.split_file)}',
                                       v['patient'], files=v.get('files', 1), fault=False))
        if not any(v['split'] for v in volumes):
            hint = (' (its pseudonyms were made with another secret? see --secret-file)'
                    if any(key.startswith('hmac:') for key in fixed) else '')
            raise MRSRUserError(f'{args.split_file}: none of the {len({v["patient"] for v in volumes})} patients '
                                f'found is in it{hint}')
        volumes = [v for v in volumes if v['split']]
    redact = Redactor(args.input, {v['patient'] for v in volumes} | {s.patient_id for s in skipped},
                      None if args.keep_patient_ids else secret)
    report = {'included': [], 'skipped': [], 'warnings': [], 'counts': {},
              'pseudonymised': not args.keep_patient_ids, 'parameters': _report_parameters(args, config)}

    def write_output(tmp):
        # pass 1: load, normalise and cache each volume; whatever fails skips that volume only, unless it stops the
        # run (an OSError on the output, a full disk, Ctrl-C: see mrsr_plugin.errors.stops_the_run)
        cache = os.path.join(tmp, '.cache')
        os.makedirs(cache)
        loaded = []
        for volume in progress(volumes, 'reading', args.quiet):
            with isolate(output=tmp) as guard:
                done = _load_volume(volume, args, multiple, os.path.join(cache, f'{len(loaded):06d}.npy'))
            if guard.error is not None:
                files = volume.get('files', 1)  # a series of several files says it is skipped whole
                whole = f'; its series ({files} files) is skipped' if files > 1 else ''
                skipped.append(Skipped.of(guard, volume.get('first_file', volume['path']), volume['patient'], files,
                                          guard.reason + whole))
                continue
            done['messages'] = list(dict.fromkeys(volume.get('messages', []) + guard.messages))
            loaded.append(done)
        if not args.quiet or not loaded:  # the reasons, when they are all there is to say
            print_skipped(skipped, args.input, [f'warning: {os.path.relpath(v["path"], args.input)}: {note}'
                                                for v in loaded for note in v['warnings']])
        if not loaded:
            raise MRSRUserError(f'{args.input}: none of the {len(volumes)} selected inputs could be loaded')

        # the split, over the patients that have something to contribute
        patients = {v['patient'] for v in loaded}
        split_of = ({v['patient']: v['split'] for v in loaded} if fixed is not None
                    else assign_splits(patients, args.split_ratio, args.seed))
        case_of = {p: f'case{i:04d}' for i, p in enumerate(sorted(split_of))}
        slices = {split: [] for split in SPLITS}  # (key, volume index, slice index)
        series_no = Counter()
        for index, volume in enumerate(loaded):
            patient = volume['patient']
            case, split = case_of[patient], split_of[patient]
            for i in volume['kept']:
                slices[split].append((f'{case}_{series_no[patient]:02d}_s{i:03d}', index, i))
            series_no[patient] += 1
            report['included'].append(dict(volume['info'], path=redact.path(volume['path']), case=case, split=split,
                                           window=volume['window'], slices_kept=len(volume['kept']),
                                           cropped_to=volume['cropped_to'], files=volume.get('files', 1)))
            if volume['messages']:
                report['included'][-1]['messages'] = [redact.text(m) for m in volume['messages']]
            report['warnings'] += [{'path': redact.path(volume['path']), 'warning': redact.text(w)}
                                   for w in volume['warnings']]
        rng = np.random.default_rng(args.seed)
        for split, cap in zip(SPLITS, args.max_slices or (0, 0, 0)):
            if cap and len(slices[split]) > cap:
                pick = sorted(rng.choice(len(slices[split]), cap, replace=False))
                slices[split] = [slices[split][i] for i in pick]

        # pass 2: degrade and write, one cached volume at a time
        cached = _CachedVolumes([v['cache'] for v in loaded])
        for split in SPLITS:
            failed = write_split(os.path.join(tmp, split), slices[split], cached, scales, config, args)
            for (key, v, i), guard in failed:  # a slice that could not be degraded: left out, with its reason
                slices[split].remove((key, v, i))
                report['included'][v]['slices_kept'] -= 1
                skipped.append(Skipped(loaded[v].get('first_file', loaded[v]['path']), f'slice {i} ({key}) left out: '
                                       f'{guard.reason}', loaded[v]['patient'], files=0, traceback=guard.traceback,
                                       messages=guard.messages))
                print_skipped(skipped[-1:], args.input)
        cached.array = None
        shutil.rmtree(cache)
        patients = {redact.patient(p): s for p, s in split_of.items()}
        write_file(os.path.join(tmp, 'split.json'), json.dumps({
            'seed': args.seed, 'ratio': args.split_ratio, 'patients': patients,
            'cases': {case_of[p]: split_of[p] for p in split_of}}, indent=1, sort_keys=True), 'w')
        report['skipped'] = [redact.skipped(s) for s in _unique(skipped)]
        report['counts'] = {split: len(slices[split]) for split in SPLITS}
        write_file(os.path.join(tmp, 'report.json'), json.dumps(report, indent=1, default=str), 'w')

    os.makedirs(os.path.dirname(out), exist_ok=True)
    write_atomically(os.path.dirname(out), os.path.basename(out), args.overwrite, write_output)
    return report


def _unique(skipped):
    """Skipped inputs without repeats of one (path, reason), in order."""
    seen = set()
    return [s for s in skipped if (s.path, s.reason) not in seen and not seen.add((s.path, s.reason))]


def write_split(folder, items, volumes, scales, config, args):
    """Degrade and write the (key, volume index, slice index) ``items`` of one split into ``folder``; returns the
    items whose degradation failed, with their guards (:class:`mrsr_plugin.errors.isolate`), which are left out."""
    os.makedirs(folder)
    names = ['HR'] + [f'LR_x{s}' for s in scales]
    raw_bytes = sum(volumes[v][i].nbytes for _, v, i in items)
    map_size = 2 * raw_bytes + 64 * 2**20  # PNG never exceeds raw size by much; LMDB needs slack for its pages
    writers = {}
    try:
        for n in names:
            writers[n] = LmdbImageWriter(os.path.join(folder, f'{n}.lmdb'), map_size)
            if args.png:
                os.makedirs(os.path.join(folder, n))
        failed = []
        for key, v, i in progress(items, os.path.basename(folder), args.quiet):
            with isolate(output=folder) as guard:
                images = {'HR': np.asarray(volumes[v][i])}
                hr = images['HR'].astype(np.float32) / (2**args.bit_depth - 1)
                for s in scales:
                    images[f'LR_x{s}'] = quantize(degrade(hr, s, config, rng_for(args.seed, key, s)), args.bit_depth)
            if guard.error is not None:
                failed.append(((key, v, i), guard))
                continue
            for n, img in images.items():
                writers[n].put(key, img)
                if args.png:
                    write_file(os.path.join(folder, n, f'{key}.png'), encode_png(img))
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    for writer in writers.values():
        writer.close()
    return failed


def progress(items, desc, quiet):
    if quiet:
        return items
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit='item', file=sys.stderr)


def load_degradation(args):
    config = {}
    if args.degradation_config:
        with open(args.degradation_config) as f:
            config = yaml.safe_load(f) or {}
        config = config.get('degradation', config)
    for key in ('downsample', 'blur_sigma', 'noise_sigma', 'motion_prob', 'motion_max_shift', 'motion_fraction'):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    return config
