"""EGGROLL vs GRPO fine-tuning at equal wall-clock: one task, one base model, one PNG.

    python scripts/llm_compare.py                                  # 2-digit addition, 1200 s each
    python scripts/llm_compare.py --seconds 300 --grpo-args "--lr 3e-4"

The same as ``eggroll compare finetune`` (eggroll.train.compare).
"""

import sys

from eggroll.train.compare import main

if __name__ == "__main__":
    main(["finetune", *sys.argv[1:]], prog="llm_compare.py")
