"""Fuzz mrsr-prepare and mrsr-infer with mutated copies of real DICOM series mixed with good ones; see --help.

    python scripts/fuzz_inputs.py --n 1000 --seed 0 1 2 3 4
"""
from mrsr_plugin.cli.fuzz_inputs import main

if __name__ == '__main__':
    main()
