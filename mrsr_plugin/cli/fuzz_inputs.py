"""scripts/fuzz_inputs.py: the command line of :mod:`mrsr_plugin.apps.fuzz` (a seeded DICOM mutation fuzzer of
mrsr-prepare and mrsr-infer).

    python scripts/fuzz_inputs.py --n 1000 --seed 0 1 2 3 4

Per seed: one line of figures per tool (exit status, series produced, inputs skipped, tracebacks and library
warnings on the console, wall time), then what failed, if anything. Exit status 0 when every check of every seed
passed, 1 otherwise.

Measured with the command above (shared 2-core CPU, load about 1.5, tiny MRDABNet, each tool in a fresh interpreter):
per seed 1000-1003 files in 337-346 series (51-74 good, 569-613 files mutated); for each tool 215-228 series
produced, every good one identical to the clean run, 556-595 inputs skipped with a reason, exit status 1, 0
tracebacks and 0 warnings on the console; 7.4-7.8 s per mrsr-prepare run, 9.0-9.5 s per mrsr-infer run, 22-24 s per
seed, 2 min in all.
"""
import argparse
import json
import os
import sys
import tempfile


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--n', type=int, default=1000, help='files per corpus (at least; whole series are added)')
    p.add_argument('--seed', type=int, nargs='+', default=[0], help='one corpus and run per seed')
    p.add_argument('--good-fraction', type=float, default=0.2, help='share of the series left untouched')
    p.add_argument('--crop', type=int, default=64, help='side of the centre crop of the Prostate-3T slices')
    p.add_argument('--prostate', help='folder of Prostate-3T patients (default: datasets/prostate3t of this checkout)')
    p.add_argument('--tools', nargs='+', default=['prepare', 'infer'], choices=['prepare', 'infer'])
    p.add_argument('--work', help='working folder (default: a temporary one, removed at the end)')
    p.add_argument('--in-process', action='store_true',
                   help='run the tools in this process (faster) instead of a fresh interpreter each, as a user does')
    p.add_argument('--json', help='write every figure to this JSON file')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mrsr_plugin.apps.fuzz import PROSTATE, fuzz, load_sources, tiny_model
    sources = load_sources(args.prostate or PROSTATE, args.crop)
    with tempfile.TemporaryDirectory(prefix='mrsr-fuzz-') as tmp:
        work = args.work or tmp
        os.makedirs(work, exist_ok=True)
        model = tiny_model(work)
        results = []
        for seed in args.seed:
            result = fuzz(os.path.join(work, f'seed{seed}'), args.n, seed, sources, model, args.in_process,
                          args.good_fraction, args.tools)
            results.append(result)
            print(f'seed {seed}: {result["files"]} files in {result["series"]} series ({result["good_series"]} good, '
                  f'{result["mutated_files"]} files mutated), built in {result["build_seconds"]:.1f} s')
            for tool, r in result['tools'].items():
                print(f'  {tool}: exit {r["status"]}, {r.get("produced", "?")} series produced '
                      f'({r.get("good_produced", "?")} of {result["good_series"]} good, identical to the clean run: '
                      f'{"yes" if not any("differ" in f for f in r["failures"]) else "NO"}), '
                      f'{r.get("skipped", "?")} skipped ({r.get("skipped_files", "?")} files, {r.get("faults", "?")} '
                      f'for a fault), {r["tracebacks"]} tracebacks, {r["warnings"]} warnings on the console, '
                      f'{r["seconds"]:.1f} s')
                for failure in r['failures']:
                    print(f'    FAILED: {failure}')
            sys.stdout.flush()
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)
    ok = all(r['ok'] for r in results)
    print(f'{len(results)} seeds: {"all checks passed" if ok else "FAILED"}')
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
