"""Ray job entrypoint for training: ``python -m jobs.train --data DIR --out DIR [--ray] ...``.

Submit with ``ray job submit --working-dir . -- python -m jobs.train --data /data/celebref
--out /runs/r1 --preset base --ray --workers 8 --gpu``; without ``--ray`` it trains in this
process. Options: ``refstar.training.cli.add_train_arguments``.
"""

from __future__ import annotations

import argparse
import sys

from refstar.training.cli import add_train_arguments, run_train


def main(argv: list[str] | None = None) -> int:
    parser = add_train_arguments(argparse.ArgumentParser(prog="python -m jobs.train"))
    return run_train(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
