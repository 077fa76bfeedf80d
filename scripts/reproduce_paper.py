"""The paper's Tables 1-4 and Fig. 7 on the embedded prostate MR, in one command with a budget; see --help.

    python scripts/reproduce_paper.py --preset cpu
"""
from mrsr_plugin.cli.reproduce_paper import main

if __name__ == '__main__':
    main()
