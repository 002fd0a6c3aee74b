"""The documentation's Python runs as written: every ```python block of README.md and
docs/API.md is executed on its own (in a temporary folder), except a block whose preceding
line is ``<!-- not-run -->`` (a fragment that needs files or names the page does not give).
The README's library example must also learn."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("README.md", "docs/API.md")
NOT_RUN = "<!-- not-run -->"


@dataclasses.dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the block's first code line in the page
    heading: str
    code: str
    not_run: bool

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line} ({self.heading})"


def python_blocks(page: str) -> list[Block]:
    text = (ROOT / page).read_text()
    blocks = []
    for match in re.finditer(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, re.S | re.M):
        before = text[: match.start()].rstrip().splitlines()
        headings = [line for line in before if line.startswith("#")]
        blocks.append(
            Block(
                page,
                text.count("\n", 0, match.start(1)) + 1,
                headings[-1].lstrip("#").strip() if headings else "",
                match.group(1),
                bool(before) and before[-1].strip() == NOT_RUN,
            )
        )
    return blocks


BLOCKS = [block for page in PAGES for block in python_blocks(page)]


def test_the_pages_have_python_blocks():
    assert [b.heading for b in BLOCKS if b.page == "README.md"][:1] == ["Library example"]
    assert any(b.page == "docs/API.md" for b in BLOCKS)


def run_block(block: Block) -> dict:
    # Blank lines in front: a traceback names the block's own line numbers in the page.
    code = compile("\n" * (block.line - 1) + block.code, block.page, "exec")
    namespace: dict = {"__name__": "__docs__"}
    exec(code, namespace)
    return namespace


def block_id(block: Block) -> str:
    """A test id that survives edits above the block: the page, its section, the block's
    number within the section."""
    same = [b for b in BLOCKS if (b.page, b.heading) == (block.page, block.heading)]
    section = block.heading.split(":")[0].replace("`", "").strip()
    return f"{block.page}:{section}:{same.index(block) + 1}"


@pytest.mark.parametrize("block", BLOCKS, ids=[block_id(b) for b in BLOCKS])
def test_python_block_runs(block, tmp_path, monkeypatch):
    if block.not_run:
        pytest.skip(f"{block.name} is marked {NOT_RUN}")
    monkeypatch.chdir(tmp_path)  # whatever a block writes lands here
    monkeypatch.setenv("EGGROLL_CACHE", str(tmp_path / "cache"))
    namespace = run_block(block)
    if block.heading == "Library example":
        state, fitness, x, y = (namespace[k] for k in ("state", "fitness", "x", "y"))
        start = float(fitness(namespace["params"], x, y)) / 256
        final = float(fitness(state.params, x, y)) / 256
        assert final > start + 0.1 and final > 0.7, (start, final)
    if "summary" in namespace and isinstance(namespace["summary"], dict):
        summary = namespace["summary"]  # an application run: a finished, finite summary
        assert summary["stopped_by"] in ("steps", "goal", "seconds", "env_steps", "callback")
        for key in ("eval_return", "valid_bits_per_byte", "final_accuracy"):
            if key in summary:
                assert math.isfinite(summary[key]), (key, summary[key])
