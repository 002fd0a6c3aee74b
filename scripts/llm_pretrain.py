"""Backprop pretraining of the tiny byte-level LLM (Llama-style, eggroll.models.llm).

    python scripts/llm_pretrain.py                       # CPU default: stdlib corpus
    python scripts/llm_pretrain.py --data notes.txt --steps 1000 --run-dir runs/tiny
    python scripts/llm_pretrain.py --init-from runs/tiny/model --data tasks/ --steps 200

The same as ``eggroll lm``; the library is ``eggroll.train.lm``. Writes ``model/`` (a Hugging
Face folder) into the run folder.
"""

import sys

from eggroll.train.cli import run_application

if __name__ == "__main__":
    run_application("lm", sys.argv[1:], prog="llm_pretrain.py")
