"""Super-resolve real MR scans with a trained generator: DICOM -> new DICOM series, NIfTI / MetaImage / NRRD
volume -> the same format, PNG/TIFF -> PNG.

    python scripts/inference.py -i ~/tcia/PROSTATEx -o results/sr -w experiments/MRDAB_GAN_x2/models/net_g_latest.pth
    python scripts/inference.py -i Task05_Prostate/imagesTs -o results/sr --volume-channel 0 -w ...

This module: input discovery, the run over every input, its report; the modules below it: :mod:`mrsr_plugin.apps.infer`.

Intensities are normalised per input as the training data were; what the clip to [0, 1] removes is upsampled
bilinearly and added back (:meth:`mrsr_plugin.apps.infer.core.Upscaler.batches`). Outputs, naming and geometry: see
docs/inference.md (image input: ``OUT/<input name>_SRx<s>/<relative path>.png``); ``--through-plane``: see
docs/through-plane.md. Bad inputs are skipped with a reason (:class:`mrsr_plugin.errors.isolate`), listed in
``OUT/mrsr-infer-report.json``; only what no input escapes (a full disk, CUDA out of memory, Ctrl-C) stops the run.
Exit status 0, 1 (some inputs skipped for a fault of theirs), 2 (stopped), 130: see docs/data.md#bad-input.
"""
import functools
import hashlib
import json
import os
import re
import sys
import time
import types
from dataclasses import dataclass

import torch

from mrsr_plugin.errors import InputFileError, MRSRUserError, first_line, isolate
from mrsr_plugin.mrio.dicom import (IMAGE_EXTENSIONS, DicomInputError, Series, Skipped, build_series,
                                       print_skipped, read_header, read_image_folder, scan_dicom_tree)
from mrsr_plugin.mrio.volume import (VolumeHeader, list_volume_files, read_volume_header,
                                        volume_extension, without_volume_files)
from mrsr_plugin.fsutil import describe_os_error, replace_file, write_atomically
from mrsr_plugin.apps.infer.core import choose_device, intensity_window, load_generator
from mrsr_plugin.apps.infer.dicom import write_dicom_job, write_dicom_through_plane_job
from mrsr_plugin.apps.infer.images import read_image_file, write_image_job
from mrsr_plugin.apps.infer.volumes import output_name, write_volume_job, write_volume_through_plane_job
from mrsr_plugin.apps.through_plane import through_plane_config
from mrsr_plugin.version import __version__

REPORT_NAME = 'mrsr-infer-report.json'  # in the output folder: what was produced, what was skipped and why


@dataclass
class Job:
    """One output: a DICOM series or the PNG/TIFF images of the input (a folder each), or a volume file."""
    name: str  # output folder or, for a volume, file name (relative to the output folder)
    label: str  # what the summary and the progress bar call it
    series: Series | None = None
    images: list | None = None  # (relative name without extension, (H, W) uint8 or uint16) pairs
    volume: VolumeHeader | None = None


DEFAULTS = dict(  # of infer()'s settings but input, output and weights; mrsr-infer's command line shows them
    opt=None, arch_args=None, param_key=None, through_plane=False, slice_thickness=None, force=False,
    data_consistency=True, scale=None, normalize=None, percentiles=None, volume_channel=None, png=False,
    png_bit_depth=None, tile=0, tile_overlap=32, batch=None, device='auto', precision='fp32', channels_last=True,
    compile=False, reparameterize='fold', keep_freed_memory=True, overwrite=False, quiet=False)


def settings(input, output, weights, **changes):
    """infer()'s settings: :data:`DEFAULTS` with ``changes``, as ``mrsr-infer -i input -o output -w weights``."""
    unknown = set(changes) - set(DEFAULTS)
    if unknown:
        raise TypeError(f'unknown mrsr-infer settings: {sorted(unknown)}')
    return types.SimpleNamespace(input=input, output=output, weights=weights, **{**DEFAULTS, **changes})


def _sanitize(text, limit=48):
    return re.sub(r'[^A-Za-z0-9.+-]+', '_', text).strip('_.')[:limit]


def _volume_job(header, root, tag):
    folder = os.path.relpath(os.path.dirname(os.path.abspath(header.path)), os.path.abspath(root))
    channel = '' if header.channel is None else f' channel {header.channel}'
    return Job(os.path.normpath(os.path.join(folder, output_name(header, tag))),
               os.path.basename(header.path) + channel, volume=header)


def _find_volumes(root, tag, channel, skipped):
    """Jobs for the volume files under ``root``; the scan's notes on them and on their data files are dropped
    from ``skipped`` (they are not DICOM) and those that cannot be used added."""
    paths = list_volume_files(root)
    skipped[:] = without_volume_files(skipped, paths)
    jobs = []
    for path in paths:
        with isolate() as guard:  # whatever goes wrong reading one file's header skips that file
            jobs.append(_volume_job(read_volume_header(path, channel), root, tag))
        if guard.error is not None:
            skipped.append(Skipped.of(guard, path))
    return jobs


def find_jobs(path, tag, quiet=False, channel=None):
    """Input file or folder -> (list of :class:`Job`, list of :class:`Skipped`): one job per MR series and per
    volume file (``channel`` of multi-channel ones), or one for all PNG/TIFF slices of a folder without either, and
    the files left out of a folder with their reasons. ``tag`` ('x2', or 'z2' through-plane) names the outputs."""
    stem = os.path.splitext(os.path.basename(os.path.abspath(path)))[0]
    image_job_name = f'{_sanitize(stem) or "images"}_SR{tag}'
    if os.path.isfile(path) and path.lower().endswith(IMAGE_EXTENSIONS):
        return [Job(image_job_name, stem, images=[(stem, read_image_file(path))])], []
    if os.path.isfile(path) and volume_extension(path):
        return [_volume_job(read_volume_header(path, channel), os.path.dirname(path), tag)], []
    if os.path.isfile(path):
        header = read_header(path)
        if isinstance(header, str):
            raise DicomInputError(path, header)
        series, skipped = [build_series([header])], []
    elif os.path.isdir(path):
        series, skipped = scan_dicom_tree(path, progress=not quiet)
    else:
        raise MRSRUserError(f'{path}: no such file or folder')
    volumes = _find_volumes(path, tag, channel, skipped) if os.path.isdir(path) else []
    if series or volumes:
        return [
            Job(f'{_sanitize(s.description) or "series"}_SR{tag}_{hashlib.sha1(s.uid.encode()).hexdigest()[:8]}',
                s.description or s.uid, series=s) for s in series
        ] + volumes, skipped
    images, skipped_images = read_image_folder(path)
    if not images:
        print_skipped(skipped + skipped_images, path)
        raise MRSRUserError(f'{path}: no MR DICOM series, volume files or PNG/TIFF slices found '
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
        'produced': produced, 'skipped': [s.report_entry(relative(os.path.abspath(s.path)), relative) for s in skipped],
    }
    path = os.path.join(output, REPORT_NAME)
    replace_file(path, json.dumps(report, indent=1))
    return path, report


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


def infer(args):
    """Run every job of the command line; returns the summary lines (per output folder and total)."""
    if args.tile < 0 or args.tile_overlap < 0 or (args.batch is not None and args.batch < 1):
        raise MRSRUserError('--tile and --tile-overlap must be >= 0 and --batch >= 1')
    output = check_output(args.output)
    device = choose_device(args.device)
    upscaler, arch = load_generator(args.weights, args.opt, args.arch_args, args.param_key, args.scale,
                                    device=device, precision=args.precision, tile=args.tile,
                                    overlap=args.tile_overlap, batch=args.batch, channels_last=args.channels_last,
                                    compile=args.compile, reparameterize=args.reparameterize,
                                    keep_freed_memory=args.keep_freed_memory)
    args.normalize, args.percentiles = intensity_window(args.normalize, args.percentiles, upscaler.info, args.weights)
    # through-plane: the scale is the training slice profile's; the network itself keeps the size (upscale 1)
    config = through_plane_config(upscaler.info, args.weights, args.opt) if args.through_plane else None
    through = config.scale if config else None
    if through and upscaler.scale != 1:
        raise MRSRUserError(f'--through-plane needs an upscale-1 network (options/through_plane), {args.weights} '
                            f'upscales x{upscaler.scale}')
    s = through or upscaler.scale
    jobs, skipped = find_jobs(args.input, f'z{s}' if through else f'x{s}', args.quiet, args.volume_channel)
    if through and any(job.images for job in jobs):
        raise MRSRUserError(f'{args.input}: --through-plane needs volumes (DICOM series or volume files), not 2-D '
                            'PNG/TIFF slices')
    for job in jobs:
        if os.path.exists(os.path.join(output, job.name)) and not args.overwrite:
            raise MRSRUserError(f'{os.path.join(output, job.name)} exists; pass --overwrite to replace it')
    root = args.input if os.path.isdir(args.input) else os.path.dirname(args.input)
    if not args.quiet:
        print_skipped(skipped, root, [f'warning: {_relative_folder(job.series, root)}: {note}'
                                      for job in jobs if job.series for note in job.series.warnings])
    created = not os.path.exists(output)
    os.makedirs(output, exist_ok=True)
    run = functools.partial(_run_job, output=output, upscaler=upscaler, args=args, arch=arch, through=config,
                            root=root)
    summary, produced, start = [], [], time.perf_counter()
    try:
        for job in jobs:
            job_start, failed, notes = time.perf_counter(), [], {}
            with isolate(output=output) as guard:  # whatever goes wrong here skips this input only
                final, count, (h, w), source = run(job, failed=failed, notes=notes)
            new = [Skipped.of(g, os.path.join(root, folder), files=n) for folder, n, g in failed]  # image groups
            if guard.error is not None:
                new.append(_job_skip(job, guard, root))
            skipped += new
            if not args.quiet:
                print_skipped(new, root)
            if guard.error is not None:
                continue
            produced.append({'output': job.name, 'label': job.label, 'slices': count, 'source': source,
                             'files': len(job.series.files) if job.series else 1 if job.volume else count,
                             'warnings': job.series.warnings if job.series else []})
            produced[-1].update(notes)  # through-plane: input geometry, its warning, data-consistency measures
            if notes.get('geometry_warning'):  # even with -q: a forced run or an assumed thickness
                print(f'warning: {job.label}: {notes["geometry_warning"]}', file=sys.stderr)
            messages = list(dict.fromkeys((job.series.messages if job.series else []) + guard.messages))
            if messages:
                produced[-1]['messages'] = messages
            change = (f'{count} slices -> {s * (count - 1) + 1} slices of {h}x{w}' if through else
                      f'{count} slices {h}x{w} -> {s * h}x{s * w}')
            summary.append(f'{job.label}: {change} in {time.perf_counter() - job_start:.1f} s -> {final}')
        if not produced:
            if args.quiet:
                print_skipped(skipped, root)
            raise MRSRUserError(f'{args.input}: none of the {len(jobs)} series or volumes could be super-resolved; '
                                'reasons above')
    except torch.cuda.OutOfMemoryError as err:
        raise MRSRUserError(f'out of GPU memory ({first_line(err)}); lower --batch or use --tile') from err
    except OSError as err:  # on the output (a full disk, a read-only folder): no other input could be written
        raise MRSRUserError(describe_os_error(err, os.path.join(output, job.name))) from err
    finally:
        if created and os.path.isdir(output) and not os.listdir(output):
            os.rmdir(output)
    path, report = write_report(output, args, produced, skipped)
    fast = ', '.join(['channels_last'] * args.channels_last + ['compiled'] * args.compile +
                     [f'reparameterize {args.reparameterize}'])
    summary.append(f'total: {len(produced)} outputs in {time.perf_counter() - start:.1f} s on {device.type} '
                   f'({args.precision}, {fast}); {len(skipped)} inputs skipped, see {path}')
    return summary, report


def _run_job(job, output, upscaler, args, arch, through, root, failed, notes):
    """Write the output of one job (``through``: the through-plane model's ThroughPlaneConfig, or None); returns
    (its path, slices, (rows, columns) of the input, its source relative to the input). Image groups that fail are
    left out and added to ``failed`` as (folder, images, guard); through-plane writers put what the report says of
    their output into ``notes``."""
    if job.series is not None:
        writer = (functools.partial(write_dicom_through_plane_job, config=through, notes=notes) if through else
                  write_dicom_job)
        write = functools.partial(writer, job=job, upscaler=upscaler, args=args,
                                  weights_name=os.path.basename(args.weights), arch=arch)
        final = write_atomically(output, job.name, args.overwrite, write)
        return final, job.series.num_slices, (job.series.rows, job.series.columns), _relative_folder(job.series, root)
    if job.volume is not None:  # a file (and its data file), written atomically
        if through:
            final = write_volume_through_plane_job(os.path.join(output, job.name), job.volume, upscaler, through, args,
                                                   job.label, notes)
        else:
            final = write_volume_job(os.path.join(output, job.name), job.volume, upscaler, args, job.label)
        count, h, w = job.volume.shape
        return final, count, (h, w), os.path.relpath(job.volume.path, root or '.')
    write = functools.partial(write_image_job, job=job, upscaler=upscaler, args=args, failed=failed)
    final = write_atomically(output, job.name, args.overwrite, write)
    return final, len(job.images) - sum(n for _, n, _ in failed), job.images[0][1].shape, '.'


def _job_skip(job, guard, root):
    """The :class:`Skipped` of a job that failed: a series under the file its error names (the whole series is
    skipped, and says so), a volume under its file, images under the input (their groups are listed already)."""
    if job.series is None:
        return Skipped.of(guard, job.volume.path if job.volume else root or '.', files=0 if job.images else 1)
    files = job.series.files
    if isinstance(guard.error, InputFileError):
        path, reason = _file_and_reason(guard.error, files)
    else:
        path, reason = files[0], guard.reason
    return Skipped.of(guard, path, files=len(files), reason=f'{reason}; its series ({len(files)} files) is skipped')


def _file_and_reason(err, files):
    """(file, reason) of an :class:`InputFileError` loading or converting one of ``files``; a message 'FILE:
    reason' is split."""
    if err.path is not None:
        return err.path, err.reason
    head, _, rest = err.reason.partition(': ')
    return (head, rest) if head in files else (files[0], err.reason)


def _relative_folder(series, root):
    """The folder of a series' first file, relative to the input folder."""
    return os.path.relpath(os.path.dirname(os.path.abspath(series.files[0])), os.path.abspath(root or '.'))
