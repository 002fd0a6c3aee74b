"""Convert an official RWKV-7 ``.pth`` checkpoint into an eggroll model folder.

    pip install ".[convert]"
    python scripts/convert_rwkv7.py RWKV-x070-World-0.1B-v2.8-20241210-ctx4096.pth rwkv7-0.1b/
    python scripts/llm_finetune.py --model rwkv7-0.1b/ --task countdown

The library is ``eggroll.models.rwkv_convert``.
"""

from eggroll.models.rwkv_convert import main

if __name__ == "__main__":
    main()
