"""Write the measured tables of README.md and docs/ from the files of the runs that measured them.

A table sits in a page between ``<!-- generated:NAME -->`` and ``<!-- /generated -->``; this script replaces what is
between the two markers with a fresh rendering of ``NAME``, so that a number in the docs cannot drift from its run:

    python scripts/docs_tables.py           # rewrite the stale pages
    python scripts/docs_tables.py --check   # exit 1 naming the stale pages (tests/test_docs.py does this)

Sources: ``docs/reproduce_cpu/`` (the outputs of ``scripts/reproduce_paper.py --preset cpu``) and ``docs/results/``
(JSON files holding the numbers of runs whose own output files were not kept; each names its command).
"""
import argparse
import csv
import glob
import json
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = re.compile(r'(<!-- generated:([\w-]+) -->\n)(.*?)(<!-- /generated -->)', re.S)


class DocsTablesError(Exception):
    """A page names a table that does not exist, or a table is used by no page."""


def _read_csv(repo, path):
    with open(os.path.join(repo, path), newline='') as f:
        return list(csv.DictReader(f))


def _read_json(repo, path):
    with open(os.path.join(repo, path)) as f:
        return json.load(f)


def _table(header, rows):
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(cell) for cell in row) + ' |' for row in rows]
    return '\n'.join(lines) + '\n'


def _cell(row, keys, digits, signed=False):
    """``mean [low, high]`` of the three entries ``keys`` (mean, low, high) of ``row``."""
    fmt = f'{{:{"+" if signed else ""}.{digits}f}}'
    mean, low, high = (fmt.format(float(row[k])) for k in keys)
    return f'{mean} [{low}, {high}]'


def _interval(row, column, digits, signed=False):
    """``mean [low, high]`` of a benchmark_zoo CSV column (``column``, ``column low``, ``column high``)."""
    return _cell(row, (column, f'{column} low', f'{column} high'), digits, signed)


# --- the CPU preset of scripts/reproduce_paper.py (docs/reproduce_cpu) -----------------------------------------------

CPU_RUN = 'docs/reproduce_cpu'
# benchmark_zoo's model names -> the names in the docs
ZOO_NAMES = {'MRDAB (ours)': 'MRDAB-GAN', 'MRDAB (ours) + bicubic skip': 'MRDAB-GAN + bicubic skip'}
# the Table 1-2 rows in the paper's order: (benchmark_zoo model, run folder, label)
ABLATION_ROWS = [
    ('table1_k3_residual', 'ablation', '3x3, residual (literal, 16 channels)'),
    ('table1_k3_residual_matched', 'ablation', '3x3, residual (36 channels: matched)'),
    ('table1_k3_dense', 'ablation', '3x3, residual dense'),
    ('table1_k35_dense', 'ablation', '3x3 + 5x5, residual dense'),
    ('table1_k135_dense', 'ablation', '1x1 + 3x3 + 5x5, residual dense'),
    ('table1_k357_dense', 'ablation', '3x3 + 5x5 + 7x7, residual dense = no attention'),
    ('table2_sam', 'ablation', '+ SAM'),
    ('table2_pcam', 'ablation', '+ PCAM'),
    ('table2_dpam', 'ablation_table2_dpam', '+ DPAM (the full model)'),
]
# (CSV column stem, header, digits of the mean, digits of the difference)
QUALITY_COLUMNS = [('MR PSNR', 'MR PSNR (dB)', 3, 3), ('MR SSIM', 'MR SSIM', 4, 4), ('HaarPSI', 'HaarPSI', 4, 4)]
# patients.csv names patients case0000... in the order of the prepared split: case0003 is Prostate3T-03-0004
VAL_TEST_PATIENTS = ('case0003', 'case0004')


# the CPU preset's Table 3 again with --perceptual (SRGAN and MRDAB-GAN with their VGG16 loss): one run per scale,
# and its columns
PERCEPTUAL_RUNS = {4: f'{CPU_RUN}/perceptual', 2: f'{CPU_RUN}/perceptual_x2'}
PERCEPTUAL_COLUMNS = QUALITY_COLUMNS[:2] + [('LPIPS', 'LPIPS', 4, 4), ('DISTS', 'DISTS', 4, 4)]


def _parameters(repo, run, root=CPU_RUN):
    return {(row['Model'], row['Scale']): int(row['Parameters'])
            for row in _read_csv(repo, f'{root}/{run}/table4.csv')}


def _quality_cells(row, scale, columns=QUALITY_COLUMNS):
    cells = []
    for stem, _, digits, diff_digits in columns:
        column = f'{stem} x{scale}'
        cells.append(_interval(row, column, digits))
        cells.append(_interval(row, column + ' diff', diff_digits, signed=True) if row[column + ' diff'] else '')
    return cells


def _quality_header(columns=QUALITY_COLUMNS):
    header = []
    for _, title, _, _ in columns:
        header += [title, '- bicubic']
    return header


def table3(repo, scale, root=CPU_RUN, columns=QUALITY_COLUMNS):
    rows = _read_csv(repo, f'{root}/table3/table3.csv')
    params = _parameters(repo, 'table3', root)
    psnr = {(row['model'], row['patient']): float(row['mr_psnr'])
            for row in _read_csv(repo, f'{root}/table3/patients.csv') if row['scale'] == str(scale)}
    out = []
    for row in rows:
        model = row['Model']
        per_patient = ' / '.join(f'{psnr[model, patient]:.2f}' for patient in VAL_TEST_PATIENTS)
        out.append([ZOO_NAMES.get(model, model), f'{params[model, f"x{scale}"]:,}'] +
                   _quality_cells(row, scale, columns) + [per_patient])
    return _table(['model', 'parameters'] + _quality_header(columns) + ['PSNR val / test'], out)


def perceptual_table3(repo, scale):
    """Table 3 at ``scale`` of the run with --perceptual, with its training times and command."""
    run = PERCEPTUAL_RUNS[scale]
    times = _read_json(repo, f'{run}/training_time.json')
    preset = _read_json(repo, f'{run}/preset.json')
    command = (f'python scripts/reproduce_paper.py --preset {preset["preset"]} --tables {" ".join(preset["tables"])} '
               f'--perceptual --only {" ".join(preset["only"])} --metrics mr_psnr mr_ssim haarpsi lpips dists')
    return table3(repo, scale, run, PERCEPTUAL_COLUMNS) + (
        '\nTraining time (BasicSR\'s "Time consumed"; one thread while other single-thread jobs shared the 2 '
        'cores): ' + ', '.join(f'{name} {t}' for name, t in times.items()) + '.' +
        (f' {preset["note"]}' if 'note' in preset else '') + '\n' +
        _source_line({'commands': preset.get('commands') or [command]}))


# --- learning curves: reproduce_paper.py --budgets (docs/reproduce_cpu/curve_x4) ------------------------------------

CURVE_RUN = f'{CPU_RUN}/curve_x4'
CURVE_METRICS = [('mr_psnr', 'MR PSNR (dB)', 3), ('mr_ssim', 'MR SSIM', 4), ('lpips', 'LPIPS', 4),
                 ('dists', 'DISTS', 4)]


def learning_curve(repo):
    """Each model at each budget (its own run): mean [interval] and the difference to bicubic, per patient PSNR; then
    each model's paired difference to the first trained model (curve_versus.csv)."""
    rows = {(r['iters'], r['model'], r['metric']): r for r in _read_csv(repo, f'{CURVE_RUN}/curve.csv')}
    psnr = {(r['iters'], r['model'], r['patient']): float(r['mr_psnr'])
            for r in _read_csv(repo, f'{CURVE_RUN}/curve_patients.csv')}
    budgets = sorted({key[0] for key in rows}, key=int)
    models = list(dict.fromkeys(key[1] for key in rows))
    metrics = [m for m in CURVE_METRICS if all((i, n, m[0]) in rows for i in budgets for n in models)]
    out = []
    for model in models:
        for iters in budgets[:1] if model == 'Bicubic' else budgets:
            cells = [ZOO_NAMES.get(model, model), '' if model == 'Bicubic' else iters]
            for metric, _, digits in metrics:
                row = rows[iters, model, metric]
                cells.append(_cell(row, ('mean', 'low', 'high'), digits))
                if metric == 'mr_psnr':
                    cells.append(_cell(row, ('diff', 'diff_low', 'diff_high'), digits, True) if row['diff'] else '')
            cells.append(' / '.join(f'{psnr[iters, model, p]:.2f}' for p in VAL_TEST_PATIENTS))
            out.append(cells)
    header = ['model', 'iterations'] + [h for metric, title, _ in metrics
                                        for h in ([title, '- bicubic'] if metric == 'mr_psnr' else [title])]
    text = _table(header + ['PSNR val / test'], out)
    versus = {(r['iters'], r['model'], r['metric']): r for r in _read_csv(repo, f'{CURVE_RUN}/curve_versus.csv')}
    pairs = list(dict.fromkeys((r['model'], r['versus']) for r in versus.values()))
    for model, other in pairs:
        lines = [[iters] + [_cell(versus[iters, model, metric], ('diff', 'diff_low', 'diff_high'), digits, True)
                            for metric, _, digits in metrics] for iters in budgets]
        text += (f'\n{ZOO_NAMES.get(model, model)} - {ZOO_NAMES.get(other, other)}, paired over the same slices:\n\n' +
                 _table(['iterations'] + [title for _, title, _ in metrics], lines))
    runs = _read_json(repo, f'{CURVE_RUN}/curve_runs.json')
    times = '; '.join(f'{iters}: ' + ', '.join(f'{ZOO_NAMES.get(m, m)} {t}' for m, t in by_model.items())
                      for iters, by_model in sorted(runs['training_time'].items(), key=lambda kv: int(kv[0])))
    return text + f'\nTraining time per budget ({runs["note"]}): {times}.\n' + _source_line(runs)


def table4(repo):
    rows = _read_csv(repo, f'{CPU_RUN}/table3/table4.csv')
    out = [[ZOO_NAMES.get(row['Model'], row['Model']), row['Scale'], f'{int(row["Parameters"]):,}',
            row['MACs/slice'], row['Inference time (s)'], row['Latency median (ms)'], row['Peak memory (MiB)']]
           for row in rows]
    device = {row['Device'] for row in rows}
    return _table(['model', 'scale', 'parameters', 'MACs per slice', f'test time, {rows[0]["Slices"]} slices (s)',
                   'latency median (ms)', 'peak RSS (MiB)'], out) + f'\nDevice: {", ".join(sorted(device))}.\n'


def ablation(repo):
    runs = {}
    out = []
    for model, run, label in ABLATION_ROWS:
        if run not in runs:
            runs[run] = ({row['Model']: row for row in _read_csv(repo, f'{CPU_RUN}/{run}/table3.csv')},
                         _parameters(repo, run))
        rows, params = runs[run]
        out.append([label, f'{params[model, "x4"]:,}'] + _quality_cells(rows[model], 4))
    return _table(['row', 'parameters'] + _quality_header(), out)


def cpu_wall_time(repo):
    times = _read_json(repo, f'{CPU_RUN}/wall_time.json')
    preset = _read_json(repo, f'{CPU_RUN}/preset.json')
    names = {'table3': 'Tables 3-4 and Fig. 7 (`--tables 3`)', 'ablation': 'Tables 1-2 at x4 (`--tables 12`)'}
    rows = [[names.get(part, part), f'{int(seconds // 60)} min {round(seconds % 60)} s']
            for part, seconds in times.items()]
    return _table(['part', 'wall time'], rows) + (
        f'\nPreset `{preset["preset"]}`: {preset["iters"]} iterations x batch {preset["batch"]} x '
        f'{preset["gt_size"]}x{preset["gt_size"]} HR crops, lr {preset["lr"]:g}; MRDAB {preset["mrdab"]["num_feat"]} '
        f'channels, {preset["mrdab"]["num_block"]} blocks of {preset["mrdab"]["num_groups"]} groups; tested on '
        f'{" + ".join(preset["test_splits"])} of `{preset["data"]}`.\n')


# --- runs kept as JSON in docs/results --------------------------------------------------------------------------------


def _source_line(data):
    commands = data.get('commands') or [data['command']]
    return '\nMeasured with:\n\n```bash\n' + '\n'.join(commands) + '\n```\n'


def demo_seeds(repo):
    data = _read_json(repo, 'docs/results/demo_seeds.json')
    rows = []
    for s in data['seeds']:
        bic, model, val = s['test_bicubic'], s['test_model'], s['val_model']
        rows.append([
            s.get('label') or f'{s["seed"]}' + (' (`make demo`)' if s['seed'] == 0 else ''), f'{s["train_s"]} s',
            f'{bic["mr_psnr"]:.3f} dB / {bic["mr_ssim"]:.4f}',
            f'**{model["mr_psnr"]:.3f} dB / {model["mr_ssim"]:.4f}**',
            f'{model["mr_psnr"] - bic["mr_psnr"]:+.2f} dB / {model["mr_ssim"] - bic["mr_ssim"]:+.3f}',
            f'{s["nyquist_vs_bicubic"]:.1f}', f'{val["mr_psnr"]:.2f} dB / {val["mr_ssim"]:.4f}'])
    val_bic = data['val_bicubic']
    return _table(['seed', 'training (1000 iterations)', 'test patient: bicubic', 'MRDAB-GAN', 'difference',
                   f'Nyquist energy (HR: {data["hr_nyquist_vs_bicubic"]})',
                   'validation patient: MRDAB-GAN'], rows) + (
        f'\nMR PSNR / MR SSIM (float, data range 1, border 2) over the 19 slices of each patient; on the validation '
        f'patient bicubic scores {val_bic["mr_psnr"]:.2f} dB / {val_bic["mr_ssim"]:.4f}. The Nyquist column is the '
        f'output\'s energy at the Nyquist frequency over bicubic\'s. {data["machine"]}; training time '
        f'{data["training_time"]}.\n')


def demo_pooled(repo):
    data = _read_json(repo, 'docs/results/demo_pooled.json')
    psnr = data['mr_psnr']
    rows = [['MR PSNR (dB)', '{:.3f} [{:.3f}, {:.3f}]'.format(*psnr['model']),
             '{:.3f} [{:.3f}, {:.3f}]'.format(*psnr['bicubic']), '{:+.3f} [{:+.3f}, {:+.3f}]'.format(*psnr['diff'])]]
    rows += [[name, '', '', '{:+.4f} [{:+.4f}, {:+.4f}]'.format(*diff)] for name, diff in data['diffs'].items()]
    per_patient = ', '.join(f'{patient} {diff:+.3f} dB' for patient, diff in psnr['diff_per_patient'].items())
    return _table(['metric', 'mrdab_x2_prostate3t_demo', 'bicubic', 'difference'], rows) + (
        f'\nMR PSNR difference per patient: {per_patient}.\n' + _source_line(data))


def _through_plane(repo, name):
    data = _read_json(repo, 'docs/results/through_plane.json')
    setting = next(s for s in data['settings'] if s['name'] == name)
    rows = []
    for p in setting['patients']:
        rows.append([p['patient']] + ['{:.3f} / {:.4f}'.format(*p[m]) for m in data['methods']] +
                    ['**{:.3f} / {:.4f}**'.format(*p['model']),
                     '{:+.3f} dB / {:+.4f}'.format(*p['vs_cubic'])])
    return _table(['patient'] + data['methods'] + [setting['model'], 'vs cubic'], rows) + (
        f'\n{setting["what"]}. Weights `{setting["weights"]}`, option file '
        f'`{setting["option_file"]}`; training took {setting["training"]}.\n')


def through_plane_eclare_sim(repo):
    """The geometry-matched model and ECLARE against interpolation on the simulated test patient
    (docs/results/through_plane_eclare_sim.json: evaluate_through_plane.py --candidate)."""
    data = _read_json(repo, 'docs/results/through_plane_eclare_sim.json')
    summary = {method: by_patient['mean'] for method, by_patient in data['summary'].items()}
    cubic = summary['cubic']
    rows = [[method, f'{v["mr_psnr"]:.3f}', f'{v["mr_ssim"]:.4f}', '' if method == 'cubic' else
             f'{v["mr_psnr"] - cubic["mr_psnr"]:+.3f} dB / {v["mr_ssim"] - cubic["mr_ssim"]:+.4f}']
            for method, v in summary.items()]
    ahead, eclare = data['slices_ahead_in_mr_psnr'], data['eclare']
    counts = '; '.join(f'{who}: {n}' for who, n in ahead.items() if who != 'of')
    return _table(['method', 'MR PSNR (dB)', 'MR SSIM', 'vs cubic'], rows) + (
        f'\n{data["what"]}. Slices of {ahead["of"]} ahead in MR PSNR: {counts}. ECLARE {eclare["version"]}: '
        f'{eclare["wall"]} wall, {eclare["peak_rss_gib"]} GiB peak RSS ({eclare["note"]}).\n' + _source_line(data))


def through_plane_views(repo):
    views = _read_json(repo, 'docs/results/through_plane.json')['views_on_validation_patient']
    return _table(['views', 'MR PSNR over cubic along z'],
                  [[name, f'{gain:+.2f} dB'] for name, gain in views.items() if name != 'what']) + (
        f'\n{views["what"]}.\n')


def through_plane_reference(repo):
    """The --json output of ``evaluate_through_plane.py --reference`` kept in docs/results."""
    data = _read_json(repo, 'docs/results/through_plane_reference.json')
    metrics, name, rows = ('pearson', 'nmi', 'psnr', 'ssim', 'z_derivative_r'), data['name'], []
    digits = {m: 3 if m == 'psnr' else 4 for m in metrics}
    for ref in data['references']:
        reg, scores = ref['registration'], ref['metrics']
        motion = '{:.1f}, {:.1f}, {:.1f} mm; {:.1f}, {:.1f}, {:.1f} deg'.format(*reg['translation_mm'],
                                                                               *reg['rotation_deg'])
        for k, (candidate, values) in enumerate(scores.items()):
            rows.append([ref['reference'] if k == 0 else '', motion if k == 0 else '', candidate] +
                        [f'{values[m]:.{digits[m]}f}' for m in metrics])
        for other in [c for c in scores if c not in ('linear', 'cubic')]:
            rows.append(['', '', f'**{other} - cubic**'] + [
                f'**{_to_cubic(ref, "to_cubic", other, m, scores[other][m] - scores["cubic"][m])}**'
                if m in ('pearson', 'z_derivative_r') else f'**{scores[other][m] - scores["cubic"][m]:+.{digits[m]}f}**'
                for m in metrics])
    forced = ' (forced: trained for another slice geometry)' if (data['model'] or {}).get('geometry_warning') else ''
    roi = data['references'][0]['roi']
    return _table(['reference', 'registration (translation; rotation about x, y, z)', 'candidate', 'Pearson', 'NMI',
                   'PSNR (dB)', 'SSIM', 'z-derivative r'], rows) + (
        f'\nAxial `{data["axial"]["series"]}` ({data["axial"]["acquisition"]}), x{data["scale"]}; {name}: weights '
        f'`{data["weights"]}`{forced}; region {roi["size_mm"][0]:g} x {roi["size_mm"][1]:g} mm around '
        '({:.1f}, {:.1f}, {:.1f}) mm, all of z covered; '.format(*roi['centre_mm']) +
        f'{data["wall_s"]:g} s in all on a shared 2-core CPU, one thread.{_interval_note(data)}\n')


def _to_cubic(ref, key, name, metric, value):
    """``value`` (a difference to cubic) signed, with its bootstrap interval where the run's JSON has one
    (``intervals[key]``, key 'to_cubic' or 'best_to_cubic')."""
    interval = ref.get('intervals', {}).get(key, {}).get(name, {}).get(metric)
    return f'{value:+.4f}' + ('' if interval is None else f' [{interval["low"]:+.4f}, {interval["high"]:+.4f}]')


def _to_cubic_cells(ref, name, metric):
    """(without blur, at matched smoothing): ``name``'s differences to cubic in ``metric`` on one reference of a
    --smoothing run, each with its interval (:func:`_to_cubic`)."""
    plain, best = ref['metrics'], ref['smoothing']['best']
    return (_to_cubic(ref, 'to_cubic', name, metric, plain[name][metric] - plain['cubic'][metric]),
            _to_cubic(ref, 'best_to_cubic', name, metric, best[name][metric][0] - best['cubic'][metric][0]))


def _interval_note(data):
    intervals = [ref['intervals'] for ref in data['references'] if 'intervals' in ref]
    if not intervals:
        return ''
    slices = ' and '.join(str(i['slices']) for i in intervals)
    blurs = '; at matched smoothing the best blur is chosen again in each resample' * ('best_to_cubic' in intervals[0])
    return (f' [low, high]: {100 * intervals[0]["level"]:g} % paired bootstrap interval over the reference slices in '
            f'the region ({slices}; {intervals[0]["resamples"]} resamples{blurs}).')


def through_plane_smoothing(repo):
    """evaluate_through_plane.py --reference --smoothing: per reference and candidate, Pearson and the z-derivative
    correlation without blur and at the candidate's best blur, and each non-interpolation's difference to cubic."""
    data = _read_json(repo, 'docs/results/through_plane_reference_smoothing.json')
    metrics, rows = (('pearson', 'Pearson'), ('z_derivative_r', 'z-derivative r')), []
    for ref in data['references']:
        plain, best = ref['metrics'], ref['smoothing']['best']
        for k, name in enumerate(plain):
            rows.append([ref['reference'] if k == 0 else '', name] + [
                cell for m, _ in metrics for cell in (f'{plain[name][m]:.4f}',
                                                      f'{best[name][m][0]:.4f} ({best[name][m][1]:g} mm)')])
        for name in [c for c in plain if c not in ('linear', 'cubic')]:
            rows.append(['', f'**{name} - cubic**'] + [
                f'**{cell}**' for m, _ in metrics for cell in _to_cubic_cells(ref, name, m)])
    sigmas = ', '.join(f'{s:g}' for s in data['references'][0]['smoothing']['sigmas_mm'])
    header = ['reference', 'candidate'] + [h for _, title in metrics for h in (title, f'{title}, best blur (sigma)')]
    return _table(header, rows) + (f'\nBlurs: 3-D Gaussian, sigma {sigmas} mm, and none (0); {data["name"]}: weights '
                                   f'`{data["weights"]}`; {data["wall_s"]:g} s in all on a shared 2-core CPU, one '
                                   f'thread.{_interval_note(data)}\n')


# the shipped through-plane models on the real exam, each run by -w --smoothing (--force where its geometry differs):
# weights -> its --json (the geometry-matched model's is the run of the through-plane-smoothing table)
PROFILE_RUNS = {
    'mrdab_z2_prostate3t_demo': 'docs/results/through_plane_profiles/mrdab_z2_prostate3t_demo.json',
    'mrdab_z2_3mm_gap06_prostate3t': 'docs/results/through_plane_reference_smoothing.json',
    'mrdab_z2_3mm_prostate3t': 'docs/results/through_plane_profiles/mrdab_z2_3mm_prostate3t.json',
    'mrdab_z2thick_prostate3t_demo': 'docs/results/through_plane_profiles/mrdab_z2thick_prostate3t_demo.json',
}


def through_plane_profiles(repo):
    """Each shipped through-plane model against cubic on the real references, by the slice width it was trained to
    undo (slice_thickness / target_spacing, in output slices), without blur and at matched smoothing (each candidate
    at its best blur): the --json of evaluate_through_plane.py --reference --smoothing of each
    (:data:`PROFILE_RUNS`)."""
    rows, metrics = [], ('pearson', 'z_derivative_r')
    for weights, path in PROFILE_RUNS.items():
        data = _read_json(repo, path)
        assert data['weights'] == weights, (path, data['weights'])
        deg, model, name = data['degradation'], data['model'], data['name']
        gap = f' every {deg["slice_thickness"] + deg["slice_gap"]:g}' if deg['slice_gap'] else ' contiguous'
        row = [f'`{weights}`', f'{deg["slice_thickness"]:g} mm{gap} -> {deg["target_spacing"]:g} mm',
               'yes' if not model.get('geometry_warning') else 'no (--force)',
               f'{deg["slice_thickness"] / deg["target_spacing"]:.2f}', f'{model["inplane_hf_ratio"]:.2f}']
        row += [' / '.join(_to_cubic_cells(ref, name, m)) for ref in data['references'] for m in metrics]
        rows.append(row)
    planes = [ref['plane'] for ref in data['references']]
    header = ['model', 'trained for', 'fits 3 mm every 3.6 mm', 'slice width undone (output slices)',
              'in-plane HF ratio'] + [f'{plane} {m} - cubic' for plane in planes for m in ('Pearson', 'z-deriv. r')]
    return _table(header, rows) + ('\nEach difference to cubic: without blur / at matched smoothing (each candidate '
                                   f'at its best blur, --smoothing 0.5 1 1.5 2 2.5 3 4).{_interval_note(data)}\n')


def through_plane_slice_shift(repo):
    """The geometry-matched model trained with and without slice_shift: simulated (evaluate_through_plane.py on the
    test patient) and on the real references (--reference --smoothing), docs/results/through_plane_shift/."""
    plain_sim = next(s for s in _read_json(repo, 'docs/results/through_plane.json')['settings']
                     if s['name'] == 'z2_3mm_gap06')['patients'][0]['vs_cubic'][0]
    shift_sim = _read_json(repo, 'docs/results/through_plane_shift/simulated.json')['summary']
    runs = [('`mrdab_z2_3mm_gap06_prostate3t` (slice_shift 0)', plain_sim,
             _read_json(repo, 'docs/results/through_plane_reference_smoothing.json')),
            ('`train_mrdab_3mm_gap06_shift.yml` (slice_shift 0.3 mm; not shipped)',
             shift_sim['model']['mean']['mr_psnr'] - shift_sim['cubic']['mean']['mr_psnr'],
             _read_json(repo, 'docs/results/through_plane_shift/reference.json'))]
    rows = []
    for label, simulated, data in runs:
        name, row = data['name'], [label, f'{simulated:+.3f} dB', f'{data["model"]["inplane_hf_ratio"]:.2f}']
        row += [' / '.join(_to_cubic_cells(ref, name, m)) for ref in data['references']
                for m in ('pearson', 'z_derivative_r')]
        rows.append(row)
    planes = [ref['plane'] for ref in data['references']]
    header = ['model', 'test patient, simulated: MR PSNR - cubic', 'in-plane HF ratio'] + [
        f'{plane} {m} - cubic' for plane in planes for m in ('Pearson', 'z-deriv. r')]
    return _table(header, rows) + ('\nSimulated: Prostate3T-03-0005 with the model\'s profile along z (table (c) '
                                   'above). Real: PROSTATEx-0218, without blur / at matched smoothing.'
                                   f'{_interval_note(data)}\n')


def release(repo, scale):
    """The released PSNR and GAN models of one scale against bicubic on the test patient: evaluate.py --json of each
    (docs/results/release/), with the training run each JSON records."""
    runs = {kind: _read_json(repo, f'docs/results/release/mrdab_{kind}_x{scale}_prostate3t.json')
            for kind in ('psnr', 'gan')}
    metrics = {'mr_psnr': ('MR PSNR (dB) ↑', 3), 'mr_ssim': ('MR SSIM ↑', 4), 'lpips': ('LPIPS ↓', 4),
               'dists': ('DISTS ↓', 4)}

    models = {'bicubic': runs['psnr']['statistics']['models']['bicubic']}
    for kind, run in runs.items():
        (name, ) = [m for m in run['statistics']['models'] if m != 'bicubic']
        models[f'`{name}`'] = run['statistics']['models'][name]
    rows = [[name] + [_cell(stats[m], ('mean', 'low', 'high'), digits) for m, (_, digits) in metrics.items()] for name, stats in models.items()]
    by_slice = {kind: {r['key']: r for r in run['rows'] if r['model'] != 'bicubic'} for kind, run in runs.items()}
    paired = {m: sum(by_slice['gan'][k][m] - by_slice['psnr'][k][m] for k in by_slice['psnr']) / len(by_slice['psnr'])
              for m in metrics}
    rows.append(['GAN - PSNR (mean over slices)'] + [f'{paired[m]:+.{digits}f}' for m, (_, digits) in metrics.items()])
    train = '; '.join(f'`{run["training"]["command"]}`: {run["training"]["duration"]}' for run in runs.values())
    return _table(['x' + str(scale), *(label for label, _ in metrics.values())], rows) + (
        f'\nTest patient ({runs["psnr"]["statistics"]["slices"]} slices; 95 % bootstrap intervals over its slices). '
        f'Training: {train}.\n' + _source_line({'commands': [c for run in runs.values() for c in run['commands']]}))


def speed_forward(repo):
    data = _read_json(repo, 'docs/results/speed.json')
    rows = [[r['setting'], r['b1_ms'], r['b1_pct'], r.get('b8_ms', ''), r.get('b8_pct', '')] for r in data['forward']]
    limits = data['matmul_limit_tflops']
    fp32 = limits['fp32 (oneDNN GEMM)']
    return _table(['MRDAB forward (x4, 96x96, unless stated)', 'batch 1 ms', '% of limit', 'batch 8 ms',
                   '% of limit'], rows) + (
        f'\n{data["machine"]}. The fp32 limit is oneDNN\'s GEMM, {fp32[0]}-{fp32[1]} TFLOP/s across the runs (MKL\'s '
        f'`torch.mm` reaches only {limits["fp32 (MKL torch.mm)"]} on this AMD CPU, so the benchmark takes the faster '
        f'of the two); the bf16 limit {limits["bf16"]} TFLOP/s.\n' + _source_line(data))


def speed_baselines(repo):
    data = _read_json(repo, 'docs/results/speed.json')
    base, train = data['vs_baselines'], data['training_iteration_s']
    rows = [[r['model'], '{} / {}'.format(*r['b1']), '{} / {}'.format(*r['b8'])] for r in base['rows']]
    speedup = train['defaults'] / train['bf16 AMP']
    return _table(['baseline', 'batch 1: time / MACs', 'batch 8: time / MACs'], rows) + (
        f'\n{base["what"]}.\n\n'
        f'{train["what"]}: {train["defaults"]} s with the defaults, {train["plain"]} s '
        f'plain, {train["bf16 AMP"]} s with bf16 AMP ({speedup:.2f}x).\n')


TABLES = {
    'cpu-table3-x2': lambda repo: table3(repo, 2),
    'cpu-table3-x4': lambda repo: table3(repo, 4),
    'cpu-table4': table4,
    'cpu-perceptual-table3-x2': lambda repo: perceptual_table3(repo, 2),
    'cpu-perceptual-table3-x4': lambda repo: perceptual_table3(repo, 4),
    'cpu-curve-x4': learning_curve,
    'cpu-ablation': ablation,
    'cpu-wall-time': cpu_wall_time,
    'demo-seeds': demo_seeds,
    'demo-pooled': demo_pooled,
    'through-plane-z2': lambda repo: _through_plane(repo, 'z2'),
    'through-plane-z2-thick': lambda repo: _through_plane(repo, 'z2_thick'),
    'through-plane-3mm': lambda repo: _through_plane(repo, 'z2_3mm'),
    'through-plane-3mm-gap06': lambda repo: _through_plane(repo, 'z2_3mm_gap06'),
    'through-plane-views': through_plane_views,
    'through-plane-eclare-sim': through_plane_eclare_sim,
    'through-plane-reference': through_plane_reference,
    'through-plane-profiles': through_plane_profiles,
    'through-plane-smoothing': through_plane_smoothing,
    'through-plane-slice-shift': through_plane_slice_shift,
    'release-x2': lambda repo: release(repo, 2),
    'release-x4': lambda repo: release(repo, 4),
    'speed-forward': speed_forward,
    'speed-baselines': speed_baselines,
}


def pages(repo=REPO):
    """README.md and every Markdown page under docs/ (not the run outputs in docs/reproduce_cpu)."""
    found = [os.path.join(repo, 'README.md')]
    found += sorted(p for p in glob.glob(os.path.join(repo, 'docs', '**', '*.md'), recursive=True)
                    if os.sep + 'reproduce_cpu' + os.sep not in p)
    return found


def render(text, repo=REPO, used=None):
    """``text`` with every generated block replaced by a fresh rendering; adds the names to ``used``."""

    def replace(match):
        name = match.group(2)
        if name not in TABLES:
            raise DocsTablesError(f'unknown table {name!r} (known: {", ".join(TABLES)})')
        if used is not None:
            used.add(name)
        return match.group(1) + '\n' + TABLES[name](repo) + '\n' + match.group(4)

    return MARKER.sub(replace, text)


def stale_pages(repo=REPO, write=False):
    """Pages whose generated blocks differ from a fresh rendering (rewritten when ``write``).

    Raises:
        DocsTablesError: A page names an unknown table, or a table appears in no page.
    """
    stale, used = [], set()
    for page in pages(repo):
        with open(page, encoding='utf-8') as f:
            text = f.read()
        fresh = render(text, repo, used)
        if fresh != text:
            stale.append(os.path.relpath(page, repo))
            if write:
                with open(page, 'w', encoding='utf-8') as f:
                    f.write(fresh)
    unused = sorted(set(TABLES) - used)
    if unused:
        raise DocsTablesError(f'tables in no page: {", ".join(unused)}')
    return stale


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--check', action='store_true', help='write nothing; exit 1 when a page is stale')
    p.add_argument('--repo', default=REPO, help='checkout whose pages and run files are read')
    args = p.parse_args(argv)
    try:
        stale = stale_pages(args.repo, write=not args.check)
    except (DocsTablesError, OSError, KeyError, ValueError) as err:
        print(f'docs_tables.py: error: {err}', file=sys.stderr)
        return 2
    for page in stale:
        print(f'{page}: {"stale" if args.check else "updated"}')
    return 1 if stale and args.check else 0


if __name__ == '__main__':
    sys.exit(main())
