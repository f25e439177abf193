"""Run the pack's jobs headless: ``python atelier_cli.py --help``."""
import sys

from atelier_loader import load_pack

if __name__ == "__main__":
    load_pack(run_init=False)  # the nodes (and torch) load only when a command runs
    from atelier.cli import main

    sys.exit(main())
