"""The paper's Tables 1-4 and Fig. 7 on the embedded prostate MR, in one command with a budget.

    python scripts/reproduce_paper.py --preset cpu                  # Tables 1-4, at most 60 min on 2 CPU cores
    python scripts/reproduce_paper.py --preset gpu                  # sized for ~10 min on one H100-class GPU
    python scripts/reproduce_paper.py --preset cpu --tables 3       # Tables 3-4 and Fig. 7 only
    python scripts/reproduce_paper.py --retest benchmarks/paper/cpu # test the trained models again (new metrics)
    python scripts/reproduce_paper.py --tables 3 --perceptual       # SRGAN and MRDAB-GAN with their VGG16 loss
    python scripts/reproduce_paper.py --tables 3 --budgets 400 800 1600 3200 --only Bicubic_x4 EDSR_f64b8_x4 \
        MRDAB_GAN_x4.yml                                            # a learning curve: one run per budget

Each part (``table3``: the zoo at x2 and x4 plus MRDAB with ``global_skip: bicubic``; ``ablation``: the Table 1-2
rows of ``options/ablation`` at x4, ``table2_none`` = ``table1_k357_dense`` trained once) is one run of
``scripts/benchmark_zoo.py`` on copies of the option files with the preset (:data:`PRESETS`) laid over them, written to
``<output>/options``. The protocol, what each preset changes and why: see docs/zoo.md.
"""
import csv
import json
import os
import time

import yaml

from mrsr_plugin.apps import benchmark, evaluation
from mrsr_plugin.apps.benchmark import REPO
from mrsr_plugin.archs.mrdab_arch import matched_residual_growth
from mrsr_plugin.errors import BenchmarkError
from mrsr_plugin.options import load_options
from mrsr_plugin.weights import missing_pretrained

ZOO = os.path.join(REPO, 'options', 'zoo')
ABLATION = os.path.join(REPO, 'options', 'ablation')
TABLE3_FILES = [os.path.join(ZOO, f'{kind}_{model}_x{scale}.yml') for model, kind in (
    ('bicubic', 'test'), ('srcnn', 'train'), ('fsrcnn', 'train'), ('edsr', 'train'), ('srgan', 'train'),
    ('mrdab', 'train')) for scale in (2, 4)]
# table2_none is table1_k357_dense (the paper's Table 1 ends where Table 2 starts: 3/5/7 dense, no attention) and is
# trained once, as table1_k357_dense; table2_dpam is the full model
ABLATION_ROWS = ['table1_k3_residual', 'table1_k3_residual_matched', 'table1_k3_dense', 'table1_k35_dense',
                 'table1_k135_dense', 'table1_k357_dense', 'table2_sam', 'table2_pcam', 'table2_dpam']
TEST_SPLITS = ['val', 'test']

PRESETS = {name: os.path.join(REPO, 'options', 'presets', f'{name}.yml') for name in ('cpu', 'gpu')}


def preset_iters(preset):
    """The training iterations the preset file ``preset`` sets."""
    with open(preset) as f:
        return yaml.safe_load(f)['train']['total_iter']


def iters_overrides(iters):
    """--force_yml entries for ``iters`` iterations, the lr halved at 70% as in the presets."""
    return [f'train:total_iter={iters}', f'train:scheduler:milestones=[{int(0.7 * iters)}]']


def budgeted(path, preset, overrides, skip=None):
    """The option dict of ``path`` with the preset file ``preset`` and ``overrides`` laid over it (where the file has
    the block); ``skip`` sets MRDABNet's global_skip."""
    opt = load_options(path, overrides, [preset], missing='skip')
    net = opt['network_g']
    if net['type'] == 'MRDABNet':
        def matched_growth(net):  # of a residual block with the parameters of the paper's 16-growth dense block
            return matched_residual_growth(net['num_feat'], 16, net['num_groups'], net['kernel_sizes'])

        paper = load_options(path)['network_g']
        if paper['connection'] == 'residual' and paper['growth'] == matched_growth(paper):
            net['growth'] = matched_growth(net)  # table1_k3_residual_matched: the width follows the reduced size
        if skip:
            net['global_skip'] = skip
    return opt


def derived_files(part, preset, folder, overrides=()):
    """Writes the budgeted option files of ``part`` ('table3' or 'ablation') to ``folder``; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    plans = []
    if part == 'table3':
        for path in TABLE3_FILES:
            plans.append((path, None))
            if load_options(path)['network_g']['type'] == 'MRDABNet':
                plans.append((path, 'bicubic'))
    else:  # Bicubic first: the reference of the differences
        plans = [(os.path.join(ZOO, 'test_bicubic_x4.yml'), None)]
        plans += [(os.path.join(ABLATION, f'{row}.yml'), 'bicubic') for row in ABLATION_ROWS]
    paths = []
    for path, skip in plans:
        opt = budgeted(path, preset, overrides, skip)
        opt['label'] = opt['name'].split('_x4_')[-1] if '_table' in opt['name'] else benchmark.label(opt)
        if skip and part == 'table3':
            opt['label'] += ' + bicubic skip'
            opt['name'] += '_bicubic_skip'
        paths.append(os.path.join(folder, f'{opt["name"]}.yml'))
        with open(paths[-1], 'w') as f:
            yaml.safe_dump(json.loads(json.dumps(opt)), f, sort_keys=False)
    return paths


def preset_file(preset, perceptual, folder):
    """The preset file laid over every option file: ``preset`` itself, or (``perceptual``) a copy written to
    ``folder`` without the preset's ``train: perceptual_opt: ~``, so that the option files' perceptual losses stay
    (SRGAN's and MRDAB-GAN's, VGG16 features from the weights cache)."""
    if not perceptual:
        return preset
    message = missing_pretrained(['vgg16_imagenet_features'])
    if message:  # before any training: not after the models without a perceptual loss have trained
        raise BenchmarkError(message)
    with open(preset) as f:
        opt = yaml.safe_load(f)
    opt.get('train', {}).pop('perceptual_opt', None)
    path = os.path.join(folder, 'preset.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def _record(args, iters, overrides):
    """What ``preset.json`` keeps of a run: what makes its numbers (a learning curve reuses a budget only if equal)."""
    return {'preset': args.preset, 'preset_file': os.path.relpath(PRESETS[args.preset], REPO), 'force_yml': overrides,
            'iters': iters, 'perceptual': bool(args.perceptual), 'only': args.only, 'tables': args.tables,
            'data': args.data, 'test_splits': TEST_SPLITS, 'retest': args.retest}


def run_once(args, out, iters, retest=None, resume=False):
    """One budget: each part of ``args.tables`` as one benchmark_zoo run in ``out`` (a new folder, or with
    ``resume`` an interrupted run's, whose finished trainings are kept); ``retest``, an earlier run's folder whose
    models are tested instead of trained."""
    overrides = [] if iters == preset_iters(PRESETS[args.preset]) else iters_overrides(iters)
    os.makedirs(out, exist_ok=resume)
    preset = preset_file(PRESETS[args.preset], args.perceptual, out)
    with open(os.path.join(out, 'preset.json'), 'w') as f:
        json.dump(_record(args, iters, overrides), f, indent=1)
    times = {}
    for part in [{'3': 'table3', '12': 'ablation'}[t] for t in args.tables]:
        tic = time.perf_counter()
        files = [path for path in derived_files(part, preset, os.path.join(out, 'options', part), overrides)
                 if not args.only or any(text.lower() in os.path.basename(path).lower() for text in args.only)]
        if not files:
            raise BenchmarkError(f'--only {" ".join(args.only)} leaves no option file of {part}')
        run_settings = dict(data=args.data, split=TEST_SPLITS, options=files, device=args.device,
                            output=os.path.join(out, part), iters=iters, resume=resume)
        if args.metrics:
            run_settings['metrics'] = args.metrics
        if retest:
            run_settings.update(iters=0, checkpoints=os.path.join(os.path.abspath(retest), part, 'runs',
                                                                  'experiments'))
        benchmark.run(benchmark.settings(**run_settings))
        times[part] = time.perf_counter() - tic
        print(f'reproduce_paper: {part} took {times[part] / 60:.1f} min', flush=True)
    with open(os.path.join(out, 'wall_time.json'), 'w') as f:  # written last: it marks the run complete
        json.dump({k: round(v, 1) for k, v in times.items()}, f)
    return times


def run(args):
    stamp = time.strftime('%Y%m%d-%H%M%S')
    kind = f'{args.preset}{"-perceptual" if args.perceptual else ""}{"-curve" if args.budgets else ""}'
    out = os.path.abspath(args.output or os.path.join(REPO, 'benchmarks', 'paper', f'{kind}-{stamp}'))
    if args.retest and not os.path.isdir(args.retest):
        raise BenchmarkError(f'{args.retest}: no such results folder to retest')
    if args.budgets:
        return learning_curve(args, out)
    if os.path.exists(out):
        raise BenchmarkError(f'{out} exists; results are never overwritten, choose another --output')
    iters = preset_iters(PRESETS[args.preset]) if args.iters is None else args.iters
    times = run_once(args, out, iters, args.retest)
    print(f'reproduce_paper: {args.preset} preset done in {sum(times.values()) / 60:.1f} min; results in {out}')


# --- learning curves: the same runs at several budgets ----------------------------------------------------------------

def learning_curve(args, out):
    """Every budget of ``args.budgets`` (iterations, the lr halved at 70% of each) as its own run in
    ``out/iters-N``, then ``out/curve.csv`` (every metric's mean, interval and difference to bicubic per model and
    budget), ``curve_patients.csv`` (per patient), ``curve_versus.csv`` and ``curve.png``. A long curve resumes: a
    budget whose run is complete (its ``wall_time.json``) with the same settings is kept, an interrupted one with the
    same settings is completed (its finished trainings kept); a folder with other settings is refused."""
    os.makedirs(out, exist_ok=True)
    budgets = sorted(set(args.budgets))
    for iters in budgets:
        sub = os.path.join(out, f'iters-{iters}')
        complete = os.path.exists(os.path.join(sub, 'wall_time.json'))
        if os.path.exists(sub):
            record = os.path.join(sub, 'preset.json')
            kept = None
            if os.path.isfile(record):
                with open(record) as f:
                    kept = json.load(f)
            wanted = kept and _record(args, iters, kept['force_yml'])
            if not kept or {k: kept.get(k) for k in wanted} != wanted:
                raise BenchmarkError(f'{sub} was run with other settings than these; choose another --output')
            print(f'reproduce_paper: {iters} iterations: {"kept the complete" if complete else "resuming the"} run in '
                  f'{sub}', flush=True)
            if complete:
                continue
        run_once(args, sub, iters, args.retest and os.path.join(args.retest, f'iters-{iters}'),
                 resume=os.path.exists(sub))
    paths = write_curve(out, budgets)
    print(f'reproduce_paper: learning curve of {len(budgets)} budgets in {paths[0]}, {paths[-1]}')


def write_curve(out, budgets):
    """``curve.csv``, ``curve_patients.csv``, ``curve_versus.csv`` and ``curve.png`` in ``out`` from the runs
    ``out/iters-N``. ``curve_versus.csv``: each trained model's paired difference to the first trained one at the same
    scale and budget (e.g. MRDAB-GAN - EDSR), with the same hierarchical bootstrap as the differences to bicubic."""
    tables = {'curve.csv': [], 'curve_patients.csv': [], 'curve_versus.csv': []}
    for iters in budgets:
        for part in ('table3', 'ablation'):
            folder = os.path.join(out, f'iters-{iters}', part)
            if not os.path.isdir(folder):
                continue
            for name, source in (('curve.csv', 'intervals.csv'), ('curve_patients.csv', 'patients.csv')):
                with open(os.path.join(folder, source), newline='') as f:
                    tables[name] += [{'iters': iters, 'part': part, **row} for row in csv.DictReader(f)]
            with open(os.path.join(folder, 'slices.csv'), newline='') as f:
                slices = list(csv.DictReader(f))
            tables['curve_versus.csv'] += [{'iters': iters, 'part': part, **row} for row in _versus(slices)]
    paths = []
    for name, rows in tables.items():
        if rows:
            paths.append(os.path.join(out, name))
            evaluation.write_csv(paths[-1], rows)
    paths.append(os.path.join(out, 'curve.png'))
    plot_curve(tables['curve.csv'], paths[-1])
    return paths


def _versus(slices):
    """Rows (scale, model, versus, metric, diff, diff_low, diff_high) of benchmark_zoo ``slices.csv`` rows: every
    trained model against the first trained model of its scale."""
    out = []
    for scale in dict.fromkeys(r['scale'] for r in slices):
        rows = [{k: v if k in evaluation.NOT_METRICS else float(v) for k, v in r.items() if k != 'scale'}
                for r in slices if r['scale'] == scale and r['model'] != 'Bicubic']
        models = list(dict.fromkeys(r['model'] for r in rows))
        if len(models) < 2:
            continue
        stats = evaluation.statistics(rows, reference=models[0])['models']
        out += [{'scale': scale, 'model': model, 'versus': models[0], 'metric': metric,
                 **{k: entry[k] for k in ('diff', 'diff_low', 'diff_high')}}
                for model in models[1:] for metric, entry in stats[model].items()]
    return out


def plot_curve(rows, path):
    """The difference to bicubic (MR PSNR, MR SSIM) against the iterations, one line per model and scale, with the
    bootstrap intervals as error bars."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    metrics = [m for m in ('mr_psnr', 'mr_ssim') if any(r['metric'] == m and r['diff'] for r in rows)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        lines = {}
        for r in rows:
            if r['metric'] == metric and r['diff']:
                lines.setdefault(f'{r["model"]} x{r["scale"]}', []).append(
                    (int(r['iters']), float(r['diff']), float(r['diff_low']), float(r['diff_high'])))
        for label, points in sorted(lines.items()):
            x, y, low, high = zip(*sorted(points))
            ax.errorbar(x, y, yerr=[[a - b for a, b in zip(y, low)], [b - a for a, b in zip(y, high)]],
                        marker='o', capsize=3, label=label)
        ax.axhline(0, color='grey', lw=0.8)
        ax.set_xscale('log', base=2)
        ax.set_xticks(sorted({p[0] for points in lines.values() for p in points}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel('training iterations (each its own run)')
        ax.set_ylabel(f'{ {"mr_psnr": "MR PSNR (dB)", "mr_ssim": "MR SSIM"}[metric]} - bicubic')
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
