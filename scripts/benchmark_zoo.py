"""Train (or find), test and tabulate the model zoo: the paper's Tables 3-4 and Fig. 7; see --help.

    python scripts/benchmark_zoo.py --data datasets/prostate_mr --iters 0      # the trained checkpoints
"""
from mrsr_plugin.cli.benchmark_zoo import main

if __name__ == '__main__':
    main()
