"""EGGROLL vs OpenES on gymnax environments: same seeds, same budget, one table.

    python scripts/rl_compare.py                                  # the three classic tasks
    python scripts/rl_compare.py --envs Breakout-MinAtar --seconds 1200 --no-stop

The same as ``eggroll compare rl`` (eggroll.train.compare). The whole gymnax suite, PPO and
evosax included, is ``scripts/rl_suite.py`` (``eggroll compare suite``).
"""

import sys

from eggroll.train.compare import main

if __name__ == "__main__":
    main(["rl", *sys.argv[1:]], prog="rl_compare.py")
