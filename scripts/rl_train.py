"""ES for RL policies on gymnax environments, EGGROLL or the full-rank OpenES baseline.

    python scripts/rl_train.py --env CartPole-v1                # per-env defaults
    python scripts/rl_train.py --env Pendulum-v1 --strategy openes --seconds 300
    python scripts/rl_train.py --env CartPole-v1 --resume --run-dir runs/rl-...

The same as ``eggroll rl``; the library is ``eggroll.train.rl``.
"""

import sys

from eggroll.train.cli import run_application

if __name__ == "__main__":
    run_application("rl", sys.argv[1:], prog="rl_train.py")
