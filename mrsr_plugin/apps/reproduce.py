"""The paper's Tables 1-4 and Fig. 7 on the embedded prostate MR, in one command with a budget.

    python scripts/reproduce_paper.py --preset cpu                  # Tables 1-4, at most 60 min on 2 CPU cores
    python scripts/reproduce_paper.py --preset gpu                  # sized for ~10 min on one H100-class GPU
    python scripts/reproduce_paper.py --preset cpu --tables 3       # Tables 3-4 and Fig. 7 only
    python scripts/reproduce_paper.py --retest benchmarks/paper/cpu # test the trained models again (new metrics)

Each part is one run of ``scripts/benchmark_zoo.py`` on derived copies of the repository's option files (written to
``<output>/options``; the originals are the paper's full-size settings and stay untouched):

- ``table3``: Bicubic, SRCNN, FSRCNN, EDSR, SRGAN and MRDAB (``options/zoo``) at x2 and x4, plus MRDAB with the
  plugin's ``global_skip: bicubic``: Table 3 with intervals, Table 4, the quality-versus-time plot, Fig. 7 panels;
- ``ablation``: the Table 1 and 2 rows of ``options/ablation`` at x4 (``table2_none`` is ``table1_k357_dense``, 3/5/7
  kernels, dense, no attention, and is trained once; ``table2_dpam`` is the full model), plus
  ``table1_k3_residual_matched`` (row 1 without its capacity confound), and Bicubic x4 as the reference of the
  differences.

Every model trains on the three training patients of ``datasets/prostate3t_prepared`` with the same budget (the same
iterations, batch and crop, so each sees the same pixels) and is tested on the validation and test patients pooled:
two whole patients never seen in training. No run validates during training and the last iteration's weights are
tested, so the validation patient selects nothing and is as held out as the test patient.

Presets (:data:`PRESETS`: ``options/presets/<name>.yml``, laid over every file as :mod:`mrsr_plugin.options`
describes) change only what a budget forces; the preset, its file and ``--iters`` are written into
``<output>/preset.json``, each derived option file has a ``label``. The CPU preset:

- 400 iterations of batch 4 at 128x128 HR crops (the crop SRGAN's discriminator requires) for every model;
- MRDAB reduced to 32 channels, 2 blocks of 3 groups (808,825 parameters at x2 against EDSR's 779,011; paper size
  17,992,683), its discriminator to 32 channels; the matched-residual row's width follows
  (:func:`mrsr_plugin.archs.mrdab_arch.matched_residual_growth`: 36);
- lr 5e-4 for every generator and discriminator, halved at 70% (the paper: 1e-4 constant over 200 epochs);
- no perceptual loss (VGG19's ImageNet weights cannot be downloaded here), so SRGAN and MRDAB-GAN train with L1 + GAN;
- the ablation rows use ``global_skip: bicubic`` (all alike), which makes them start at bicubic, so that a short budget
  compares what each architecture learns rather than how fast it first reaches interpolation.

The GPU preset keeps the paper's sizes, batch 32 and lr 1e-4 (still without the perceptual loss) and sets 800
iterations from arithmetic, not measured (no GPU was lent to this work): see ``options/presets/gpu.yml``.
"""
import json
import os
import time

import yaml

from mrsr_plugin.apps import benchmark
from mrsr_plugin.apps.benchmark import REPO
from mrsr_plugin.archs.mrdab_arch import matched_residual_growth
from mrsr_plugin.errors import BenchmarkError
from mrsr_plugin.options import load_options

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


def run(args):
    preset = PRESETS[args.preset]
    iters = preset_iters(preset) if args.iters is None else args.iters
    overrides = [] if args.iters is None else iters_overrides(iters)
    stamp = time.strftime('%Y%m%d-%H%M%S')
    out = os.path.abspath(args.output or os.path.join(REPO, 'benchmarks', 'paper', f'{args.preset}-{stamp}'))
    if os.path.exists(out):
        raise BenchmarkError(f'{out} exists; results are never overwritten, choose another --output')
    if args.retest and not os.path.isdir(args.retest):
        raise BenchmarkError(f'{args.retest}: no such results folder to retest')
    os.makedirs(out)
    with open(os.path.join(out, 'preset.json'), 'w') as f:
        json.dump({'preset': args.preset, 'preset_file': os.path.relpath(preset, REPO), 'force_yml': overrides,
                   'iters': iters, 'data': args.data, 'test_splits': TEST_SPLITS, 'retest': args.retest}, f, indent=1)
    times = {}
    for part in [{'3': 'table3', '12': 'ablation'}[t] for t in args.tables]:
        tic = time.perf_counter()
        files = [path for path in derived_files(part, preset, os.path.join(out, 'options', part), overrides)
                 if not args.only or any(text.lower() in os.path.basename(path).lower() for text in args.only)]
        if not files:
            raise BenchmarkError(f'--only {" ".join(args.only)} leaves no option file of {part}')
        run_settings = dict(data=args.data, split=TEST_SPLITS, options=files, device=args.device,
                            output=os.path.join(out, part), iters=iters)
        if args.metrics:
            run_settings['metrics'] = args.metrics
        if args.retest:
            run_settings.update(iters=0, checkpoints=os.path.join(os.path.abspath(args.retest), part, 'runs',
                                                                  'experiments'))
        benchmark.run(benchmark.settings(**run_settings))
        times[part] = time.perf_counter() - tic
        print(f'reproduce_paper: {part} took {times[part] / 60:.1f} min', flush=True)
    with open(os.path.join(out, 'wall_time.json'), 'w') as f:
        json.dump({k: round(v, 1) for k, v in times.items()}, f)
    print(f'reproduce_paper: {args.preset} preset done in {sum(times.values()) / 60:.1f} min; results in {out}')
