"""The README's library example runs as written and learns."""

import re
from pathlib import Path


def test_readme_library_example_runs_and_improves_accuracy():
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"## Library example\s+```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    state, fitness, x, y = (namespace[k] for k in ("state", "fitness", "x", "y"))
    start = float(fitness(namespace["params"], x, y)) / 256
    final = float(fitness(state.params, x, y)) / 256
    assert final > start + 0.1 and final > 0.7, (start, final)
