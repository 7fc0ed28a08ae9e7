"""One module per ``finecut`` subcommand (see :mod:`finecut.cli`)."""
