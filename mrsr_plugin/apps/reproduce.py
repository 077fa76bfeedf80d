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

Presets (:data:`PRESETS`) change only what a budget forces; what they change is written into each derived option
file's ``label`` and into ``<output>/preset.json``. The CPU preset:

- 400 iterations of batch 4 at 128x128 HR crops (the crop SRGAN's discriminator requires) for every model;
- MRDAB reduced to 32 channels, 2 blocks of 3 groups (808,825 parameters at x2 against EDSR's 779,011; paper size
  17,992,683), its discriminator to 32 channels; the matched-residual row's width follows
  (:func:`mrsr_plugin.archs.mrdab_arch.matched_residual_growth`: 36);
- lr 5e-4 for every generator and discriminator, halved at 70% (the paper: 1e-4 constant over 200 epochs);
- no perceptual loss (VGG19's ImageNet weights cannot be downloaded here), so SRGAN and MRDAB-GAN train with L1 + GAN;
- the ablation rows use ``global_skip: bicubic`` (all alike), which makes them start at bicubic, so that a short budget
  compares what each architecture learns rather than how fast it first reaches interpolation.

The GPU preset keeps the paper's sizes, batch 32 and lr 1e-4 (still without the perceptual loss) and sets 800
iterations from arithmetic, not measured (no GPU was lent to this work): see :data:`PRESETS`.
"""
import json
import os
import time

import yaml

from mrsr_plugin.apps import benchmark
from mrsr_plugin.apps.benchmark import REPO, load_options
from mrsr_plugin.archs.mrdab_arch import matched_residual_growth
from mrsr_plugin.errors import BenchmarkError

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

PRESETS = {
    'cpu': {
        'iters': 400, 'batch': 4, 'gt_size': 128, 'workers': 1, 'lr': 5e-4,
        'mrdab': {'num_feat': 32, 'num_block': 2, 'num_groups': 3}, 'discriminator_feat': 32,
    },
    # Arithmetic, not measured (no GPU was lent to this work). A training step costs about three forward passes. The
    # paper-size MRDAB needs 18.4e6 MACs per LR pixel (1.70e11 per 96x96 slice, README, Speed): at batch 32 of 128x128
    # crops that is 32 * 32^2 * 18.4e6 * 2 FLOP * 3 = 3.6 TFLOP per x4 step and ~14 at x2 (4x the LR pixels); the
    # two MRDAB rows per scale plus EDSR, SRGAN, SRCNN, FSRCNN and the discriminators come to ~40 TFLOP per step of
    # all Table 3 models, the nine x4 ablation rows to ~30. An H100 runs fp32 convolutions as TF32 (~495 TFLOP/s
    # dense peak); at 30% of it 800 steps take ~215 s (Table 3) + ~160 s (ablations), plus ~15 s of start-up and
    # testing for each of the 23 models: about 12 minutes in all, 6 of them training.
    'gpu': {
        'iters': 800, 'batch': 32, 'gt_size': 128, 'workers': 8, 'lr': 1e-4, 'mrdab': {}, 'discriminator_feat': None,
    },
}


def budgeted(opt, preset, label, skip=None):
    """The option dict ``opt`` changed as ``preset`` says; ``skip`` sets MRDABNet's global_skip; returns it."""
    train = opt.get('datasets', {}).get('train')
    if train is not None:
        train.update(batch_size_per_gpu=preset['batch'], gt_size=preset['gt_size'],
                     num_worker_per_gpu=preset['workers'])
        schedule = opt['train']
        for optimizer in ('optim_g', 'optim_d'):
            if optimizer in schedule:
                schedule[optimizer]['lr'] = preset['lr']
        schedule['scheduler'] = {'type': 'MultiStepLR', 'milestones': [int(0.7 * preset['iters'])], 'gamma': 0.5}
        schedule['perceptual_opt'] = None
    net = opt['network_g']
    if net['type'] == 'MRDABNet':
        def matched_growth():  # of a residual block with the parameters of the paper's 16-growth dense block
            return matched_residual_growth(net['num_feat'], 16, net['num_groups'], net['kernel_sizes'])

        matched = net['connection'] == 'residual' and net['growth'] == matched_growth()
        net.update(preset['mrdab'])
        if matched:  # table1_k3_residual_matched: the width follows the reduced size
            net['growth'] = matched_growth()
        if skip:
            net['global_skip'] = skip
        if preset['discriminator_feat'] and opt.get('network_d', {}).get('type') == 'BNINDiscriminator':
            opt['network_d']['num_feat'] = preset['discriminator_feat']
    opt['label'] = label
    return opt


def derived_files(part, preset, folder):
    """Writes the budgeted option files of ``part`` ('table3' or 'ablation') to ``folder``; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    plans = []
    if part == 'table3':
        for path in TABLE3_FILES:
            opt = load_options(path)
            plans.append((opt, None))
            if opt['network_g']['type'] == 'MRDABNet':
                skip = load_options(path)
                skip['name'] += '_bicubic_skip'
                plans.append((skip, 'bicubic'))
    else:  # Bicubic first: the reference of the differences
        plans = [(load_options(os.path.join(ZOO, 'test_bicubic_x4.yml')), None)]
        plans += [(load_options(os.path.join(ABLATION, f'{row}.yml')), 'bicubic') for row in ABLATION_ROWS]
    paths = []
    for opt, skip in plans:
        label = opt['name'].split('_x4_')[-1] if '_table' in opt['name'] else benchmark.label(opt)
        if skip and part == 'table3':
            label += ' + bicubic skip'
        opt = budgeted(opt, preset, label, skip)
        paths.append(os.path.join(folder, f'{opt["name"]}.yml'))
        with open(paths[-1], 'w') as f:
            yaml.safe_dump(json.loads(json.dumps(opt)), f, sort_keys=False)
    return paths


def run(args):
    preset = dict(PRESETS[args.preset])
    if args.iters is not None:
        preset['iters'] = args.iters
    stamp = time.strftime('%Y%m%d-%H%M%S')
    out = os.path.abspath(args.output or os.path.join(REPO, 'benchmarks', 'paper', f'{args.preset}-{stamp}'))
    if os.path.exists(out):
        raise BenchmarkError(f'{out} exists; results are never overwritten, choose another --output')
    if args.retest and not os.path.isdir(args.retest):
        raise BenchmarkError(f'{args.retest}: no such results folder to retest')
    os.makedirs(out)
    with open(os.path.join(out, 'preset.json'), 'w') as f:
        json.dump({'preset': args.preset, **preset, 'data': args.data, 'test_splits': TEST_SPLITS,
                   'retest': args.retest}, f, indent=1)
    times = {}
    for part in [{'3': 'table3', '12': 'ablation'}[t] for t in args.tables]:
        tic = time.perf_counter()
        files = [path for path in derived_files(part, preset, os.path.join(out, 'options', part))
                 if not args.only or any(text.lower() in os.path.basename(path).lower() for text in args.only)]
        if not files:
            raise BenchmarkError(f'--only {" ".join(args.only)} leaves no option file of {part}')
        run_settings = dict(data=args.data, split=TEST_SPLITS, options=files, device=args.device,
                            output=os.path.join(out, part), iters=preset['iters'])
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
