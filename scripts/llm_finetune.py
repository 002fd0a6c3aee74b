"""EGGROLL fine-tuning of a language model on a reasoning task with verifiable rewards.

    python scripts/llm_finetune.py                     # CPU demo: 2-digit addition, tiny model
    python scripts/llm_finetune.py --method grpo       # the backprop GRPO baseline, same setup
    python scripts/llm_finetune.py --task countdown --seconds 600
    python scripts/llm_finetune.py --model Qwen2.5-0.5B/ --task gsm8k --data train.jsonl
    python scripts/llm_finetune.py --resume --run-dir runs/finetune-...

The same as ``eggroll finetune``; the library is ``eggroll.train.finetune``.
"""

import sys

from eggroll.train.cli import run_application

if __name__ == "__main__":
    run_application("finetune", sys.argv[1:], prog="llm_finetune.py")
