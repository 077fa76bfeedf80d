"""Command lines, the top layer: argument parsing, the run and its printing, one module per command
(``mrsr-infer`` = :mod:`.infer`, ``mrsr-prepare`` / ``scripts/lmdb_prepare.py`` = :mod:`.prepare`, ...);
:mod:`.common` holds the one-line error handling they share. Nothing below imports this package."""
