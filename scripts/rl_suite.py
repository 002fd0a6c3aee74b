"""The gymnax RL suite: EGGROLL vs OpenES vs PPO (rejax) vs evosax Open_ES, resumable.

    python scripts/rl_suite.py run --suite main --seeds 0 1 2 --max-minutes 55
    python scripts/rl_suite.py search --suite classic
    python scripts/rl_suite.py report results/rl-suite/main-small.jsonl
    python scripts/rl_suite.py speed --envs Catch-bsuite CartPole-v1

The same as ``eggroll compare suite`` (eggroll.train.suite); see docs/RL_SUITE.md.
"""

import sys

from eggroll.train.suite import main

if __name__ == "__main__":
    main(sys.argv[1:], prog="rl_suite.py")
