"""Integer-only ES pretraining of the EGG byte language model (the main job).

    python scripts/es_pretrain.py                       # CPU default: stdlib corpus, ~3 min
    python scripts/es_pretrain.py --data PATH --steps 5000 --population 4096
    python scripts/es_pretrain.py --resume --run-dir runs/pretrain-...

The same as ``eggroll pretrain``; the library is ``eggroll.train.pretrain``. Prints the
corpus baselines, a progress bar, and at exit one line of JSON (also ``summary.json``).
"""

import sys

from eggroll.train.cli import run_application

if __name__ == "__main__":
    run_application("pretrain", sys.argv[1:], prog="es_pretrain.py")
