"""mrsr-evaluate (scripts/evaluate.py): the command line of :mod:`mrsr_plugin.apps.evaluation`."""
import argparse
import json
import sys
import time

from mrsr_plugin.apps import evaluation
from mrsr_plugin.apps.evaluation import (DEFAULT_METRICS, FOREGROUND_THRESHOLD, METRICS, REFERENCE, evaluate,
                                         format_statistics, format_table, load_splits, panel_for, statistics,
                                         summarise, usable_metrics, write_csvs)
from mrsr_plugin.checkpoint import data_mismatch
from mrsr_plugin.errors import MRSRUserError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=evaluation.__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('-opt', help='option file whose network_g (and scale) the checkpoint fits; needed only for '
                   'checkpoints that do not describe themselves (older ones, BasicSR\'s own); wins over the '
                   'checkpoint\'s, with a warning where they differ')
    p.add_argument('-w', '--weights', required=True,
                   help='BasicSR checkpoint (params_ema if present, else params), or a name of the weights manifest')
    p.add_argument('--data', required=True, help='output folder of scripts/lmdb_prepare.py')
    p.add_argument('--split', nargs='+', default=['test'], choices=['train', 'val', 'test'],
                   help='split(s) to test on; several are pooled (e.g. val test: two held-out patients, when no '
                   'model selection used the val patient)')
    p.add_argument('--name', default='model', help='the model\'s name in the table')
    p.add_argument('--metrics', nargs='+', default=list(DEFAULT_METRICS), choices=list(METRICS), metavar='METRIC',
                   help=f'metric columns, of: {" ".join(METRICS)} (MR PSNR and MR SSIM always; LPIPS and DISTS once '
                   'mrsr-fetch-vgg has made their weights)')
    p.add_argument('--resamples', type=int, default=2000, help='bootstrap resamples of the intervals')
    p.add_argument('--seed', type=int, default=0, help='seed of the bootstrap')
    p.add_argument('--panel', help='write the Fig. 7-style panel of one slice to this PNG')
    p.add_argument('--json', help='write the per-slice rows, the per-patient summary and the intervals to this '
                   'JSON file')
    p.add_argument('--csv', help='write slices.csv, patients.csv and intervals.csv to this folder')
    p.add_argument('--device', default='cpu', help='cpu or cuda')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        import torch

        import mrsr_plugin  # noqa: F401  registers the plugin's archs
        from mrsr_plugin.archs.bicubic_arch import Bicubic
        from mrsr_plugin.apps.infer.core import Upscaler, load_generator
        device = torch.device(args.device)
        model, _ = load_generator(args.weights, opt_path=args.opt, device=device)
        if model.info.get('slice_profile'):
            raise MRSRUserError(f'{args.weights}: a through-plane model; evaluate it with '
                                'scripts/evaluate_through_plane.py')
        for line in data_mismatch(model.info, args.weights, args.data):
            print(line, file=sys.stderr)
        if args.name == REFERENCE:
            raise MRSRUserError(f'--name {REFERENCE} is the reference; choose another name')
        # MR PSNR and MR SSIM always: the per-patient table shows them
        metrics, skipped = usable_metrics(list(dict.fromkeys(['mr_psnr', 'mr_ssim', *args.metrics])))
        slices = load_splits(args.data, args.split, model.scale)
        upscalers = {REFERENCE: Upscaler(Bicubic(num_in_ch=1, upscale=model.scale), device), args.name: model}
        rows, outputs = evaluate(upscalers, slices, model.scale, metrics)
    except MRSRUserError as err:
        print(f'evaluate: error: {err}', file=sys.stderr)
        sys.exit(2)
    summary = summarise(rows)
    stats = statistics(rows, args.resamples, args.seed)
    splits = '+'.join(args.split)
    print(f'{splits} split of {args.data}, x{model.scale}, {len(slices)} slices of {stats["patients"]} patient(s) '
          f'(float MR metrics, data range 1, border {model.scale}; mean = mean over patients):')
    print(format_table(summary, args.name))
    print(f'\nMean over patients [{100 * stats["level"]:g} % bootstrap interval, {stats["resamples"]} resamples] and '
          f'the paired difference to bicubic; *_fg: foreground of HR only (threshold {FOREGROUND_THRESHOLD} of the '
          'range, 3x3 opening, holes filled):')
    print(format_statistics(stats))
    for line in skipped + ([f'note: {stats["note"]}'] if stats['note'] else []):
        print(line)
    if args.panel:
        panel_for(slices, outputs, rows, args.name, model.scale, args.panel)
        print(f'panel: {args.panel}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'weights': args.weights, 'option_file': args.opt, 'data': args.data, 'splits': args.split,
                       'scale': model.scale, 'foreground_threshold': FOREGROUND_THRESHOLD, 'summary': summary,
                       'statistics': stats, 'rows': rows}, f, indent=1)
    if args.csv:
        write_csvs(args.csv, [({}, rows, summary, stats)])
    print(f'evaluated in {time.perf_counter() - start:.1f} s')
    return summary

if __name__ == '__main__':
    main()
