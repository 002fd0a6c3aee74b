"""Reasoning tasks with verifiable rewards, for fine-tuning language models with ES or RL.

Three tasks share one interface (:class:`Task`):

* :class:`Arithmetic`: ``"47+385="`` → ``"432"`` (``+``, ``-``, ``*`` with a configurable
  number of digits); the completion is the bare number, then the stop token.
* :class:`Countdown`: ``"Use 3 7 25 50 to make 84: "`` → ``"<answer>50+25+7+3-1</answer>"``
  style; reach the target with ``+ - * /`` using each given number at most once. Checked by
  :func:`parse_expression`, a small precedence parser with exact rational arithmetic
  (:class:`fractions.Fraction`): never ``eval``, never Python's ``ast``, no recursion.
* :class:`GSM8K`: grade-school word problems from a JSON-lines file the user supplies
  (``question`` and ``answer`` fields; the reference number follows ``#### `` in the answer,
  thousands separators allowed). :func:`load_gsm8k` reads it with clear errors for bad files.

Every task draws problems deterministically from a seed and splits them into disjoint train and
test sets by a hash of the problem (:func:`split_of`), so a model never trains on a held-out
problem. :meth:`Task.reward` grades a completion (any string: empty, enormous, unicode,
garbage) and returns a :class:`Reward` with two separate numbers in ``{0, 1}``: ``correct``
(the answer is right) and ``format`` (the completion is in the task's expected form). The two
are never mixed here; a caller that wants a blend says so explicitly.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import os
import re
import zlib
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

SPLITS = ("train", "test")
MAX_COMPLETION_CHARS = 4096  # longer completions are graded 0/0 without being parsed


# ------------------------------------------------------------------------------ data types
@dataclasses.dataclass(frozen=True)
class Problem:
    """One task instance.

    ``prompt``: the text the model continues. ``solution``: the reference completion in the
    task's format (what pretraining teaches and a perfect model writes). ``target``: the
    exact answer. ``numbers``: the numbers a Countdown expression may use (else empty).
    """

    prompt: str
    solution: str
    target: Fraction
    numbers: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class Reward:
    """``correct``: 1.0 if the answer is right else 0.0. ``format``: 1.0 if the completion is
    in the expected form else 0.0. Reported separately, never summed here."""

    correct: float
    format: float


def split_of(key: str, test_percent: int = 10) -> str:
    """``"test"`` for about ``test_percent`` % of problem keys, else ``"train"`` (CRC32 of the
    key: stable across runs, machines and Python versions)."""
    return "test" if zlib.crc32(key.encode("utf-8")) % 100 < test_percent else "train"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


class Task(abc.ABC):
    """A task with verifiable rewards.

    Subclasses define ``name``, :meth:`sample` and :meth:`reward`. ``problems(split, count,
    seed)`` is the deterministic list used for evaluation; ``sample(split, count, rng)`` draws
    from a NumPy generator (fine-tuning draws each generation's prompts from
    ``np.random.default_rng([seed, generation])``, so a resumed run sees the same prompts).
    """

    name = "task"

    @abc.abstractmethod
    def sample(self, split: str, count: int, rng: np.random.Generator) -> list[Problem]:
        """``count`` problems of ``split`` (``"train"`` or ``"test"``) drawn with ``rng``."""

    def problems(self, split: str, count: int, seed: int = 0) -> list[Problem]:
        """``count`` problems of ``split`` drawn with ``seed`` (the same list every time)."""
        return self.sample(split, count, np.random.default_rng(seed))

    @abc.abstractmethod
    def reward(self, problem: Problem, completion: str) -> Reward:
        """Correctness and format of one completion; never raises on adversarial text."""

    def rewards(
        self, problems: Sequence[Problem], completions: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(correct (B,), format (B,))`` float32 arrays for paired problems and completions."""
        if len(problems) != len(completions):
            raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
        graded = [self.reward(p, c) for p, c in zip(problems, completions, strict=True)]
        correct = np.array([g.correct for g in graded], np.float32)
        fmt = np.array([g.format for g in graded], np.float32)
        return correct, fmt

    def describe(self) -> dict:
        """JSON-able description (stored in run summaries and checkpoint fingerprints)."""
        return {"task": self.name}


def _reject_sample(make, split: str, count: int, rng: np.random.Generator, test_percent: int):
    """Draw ``count`` problems from ``make(rng) -> (key, problem) | None`` (``None``: try
    again) that fall in ``split``; a problem space too small for the split is an error."""
    _check_split(split)
    if count < 0:
        raise ValueError(f"count must be ≥ 0, got {count}")
    out, tries = [], 0
    limit = 1000 + 200 * count
    while len(out) < count:
        tries += 1
        if tries > limit:
            raise ValueError(
                f"could not draw {count} {split} problems in {limit} tries: the problem space "
                "is too small for this split or these settings (use more digits, more numbers "
                "or a larger target range)"
            )
        made = make(rng)
        if made is not None and split_of(made[0], test_percent) == split:
            out.append(made[1])
    return out


# ------------------------------------------------------------------------------ numbers
# The number rule (shared by parse_number, Arithmetic and GSM8K). Text is read in numerals:
# an optional sign, a digit, and everything that continues it into one token: more digits, or
# ".", ",", "/" followed by a digit ("85.5", "85,5", "85/2"), or "e"/"E" with an optional sign
# and a digit ("85e3"). A numeral is a number only if it is well formed: ASCII digits with
# optional thousands separators (1-3 digits, then groups of exactly 3 after each comma:
# "1,234,567"; "7,2" and "1,23" are not numbers) and an optional decimal part. So "85.5" is
# 85.5 and "85,5", "85e3", "85/2" are no number, never 85. A period, comma or slash not
# followed by a digit is punctuation ("72." is 72).
_NUMERAL = r"[+-]?[0-9](?:[0-9]|[.,/][0-9]|[eE][+-]?[0-9])*"
_NUMBER = r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?"
_NUMBER_FULL_RE = re.compile(_NUMBER, re.ASCII)
_LEADING_NUMERAL_RE = re.compile(r"\s*(" + _NUMERAL + ")", re.ASCII)
_NUMERAL_RE = re.compile(r"(?<![0-9.])" + _NUMERAL, re.ASCII)  # not inside another numeral
_WHOLE_INT_RE = re.compile(r"\s*-?[0-9]{1,40}\s*", re.ASCII)
_MAX_NUMBER_CHARS = 60


def _well_formed(numeral: str | None) -> bool:
    """Whether a numeral is a number by the rule above."""
    return numeral is not None and _NUMBER_FULL_RE.fullmatch(numeral) is not None


def _value(numeral: str | None) -> Fraction | None:
    """The exact value of a numeral, ``None`` if it is not well formed or over 60 characters."""
    if not _well_formed(numeral) or len(numeral) > _MAX_NUMBER_CHARS:
        return None
    return Fraction(numeral.replace(",", ""))


def parse_number(text: str) -> Fraction | None:
    """An exact number from ASCII text like ``"1,234"``, ``"-7"``, ``"+3.50"``; else ``None``.

    The whole text (surrounding spaces and one trailing ``"."`` aside) must be one number:
    optional sign, digits with well-formed thousands separators (groups of exactly three
    digits after each comma: ``"1,234"`` but not ``"7,2"`` or ``"1,23"``), an optional
    decimal part. Unicode digits, exponents, fractions, ``inf``/``nan`` and anything over 60
    characters are rejected. Graders read completions by the same rule (see the comment
    above: a number is read as a whole numeral, never as a prefix of one).
    """
    if not isinstance(text, str) or len(text) > _MAX_NUMBER_CHARS:
        return None
    text = text.strip()
    return _value(text[:-1] if text.endswith(".") else text)


# ------------------------------------------------------------------------------ arithmetic
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


class Arithmetic(Task):
    """Multi-digit arithmetic: ``"{a}{op}{b}="`` → ``"{result}"``.

    Args:
      digits: operands are uniform in ``[0, 10**digits)``.
      ops: operators to draw from, any of ``"+"``, ``"-"``, ``"*"`` (e.g. ``"+-"``).
      test_percent: share of the problem space held out for testing.

    Reward: ``correct`` if the completion starts (after whitespace) with a numeral that is a
    number equal to the result, by the rule of :func:`parse_number` (``"85"``, ``"085"``, ``"+85"``,
    ``"85.0"``, ``"85."``, ``"85 apples"`` are 85; ``"85.5"``, ``"85,5"``, ``"85e3"``,
    ``"85/2"``, ``"851"`` are not; ``"1,234"`` is 1234); ``format`` if the completion is exactly
    one plain integer (optional ``-``, surrounding whitespace allowed): the ``= <number>`` form.
    """

    name = "arithmetic"

    def __init__(self, digits: int = 2, ops: str = "+", test_percent: int = 10):
        if isinstance(digits, bool) or not isinstance(digits, int) or not 1 <= digits <= 18:
            raise ValueError(f"digits must be an integer in [1, 18], got {digits!r}")
        if not ops or any(op not in _OPS for op in ops) or len(set(ops)) != len(ops):
            raise ValueError(f"ops must be distinct characters from '+-*', got {ops!r}")
        if not 1 <= test_percent <= 50:
            raise ValueError(f"test_percent must be in [1, 50], got {test_percent}")
        self.digits, self.ops, self.test_percent = digits, ops, test_percent

    def describe(self) -> dict:
        return {"task": self.name, "digits": self.digits, "ops": self.ops}

    def sample(self, split: str, count: int, rng: np.random.Generator) -> list[Problem]:
        high = 10**self.digits

        def make(rng):
            a, b = (int(x) for x in rng.integers(0, high, 2))
            op = self.ops[int(rng.integers(0, len(self.ops)))]
            result = _OPS[op](a, b)
            prompt = f"{a}{op}{b}="
            return prompt, Problem(prompt, str(result), Fraction(result))

        return _reject_sample(make, split, count, rng, self.test_percent)

    def reward(self, problem: Problem, completion: str) -> Reward:
        if not isinstance(completion, str) or len(completion) > MAX_COMPLETION_CHARS:
            return Reward(0.0, 0.0)
        match = _LEADING_NUMERAL_RE.match(completion)
        answer = _value(match.group(1)) if match else None
        correct = answer is not None and answer == problem.target
        fmt = _WHOLE_INT_RE.fullmatch(completion) is not None
        return Reward(float(correct), float(fmt))


# ------------------------------------------------------------------------------ expressions
class ExpressionError(ValueError):
    """A Countdown expression that does not parse or cannot be evaluated."""


@dataclasses.dataclass(frozen=True)
class Expression:
    """A parsed expression: its exact ``value`` and the ``numbers`` it uses, in order."""

    value: Fraction
    numbers: tuple[int, ...]


_TOKEN_RE = re.compile(r"([0-9]+)|([-+*/×÷−()])", re.ASCII)
_CANONICAL = {"×": "*", "÷": "/", "−": "-"}


def _tokenize(text: str, max_tokens: int, max_digits: int) -> list[str]:
    tokens, pos = [], 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos == len(text):
            break
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise ExpressionError(f"unexpected character {text[pos]!r} at position {pos}")
        number, op = match.groups()
        if number is not None and len(number) > max_digits:
            raise ExpressionError(f"number with more than {max_digits} digits")
        tokens.append(number if number is not None else _CANONICAL.get(op, op))
        if len(tokens) > max_tokens:
            raise ExpressionError(f"more than {max_tokens} tokens")
        pos = match.end()
    return tokens


@dataclasses.dataclass
class _Level:
    """One parenthesis level of :func:`_evaluate` (the whole expression is level 0): the sum
    so far, the pending ``+``/``-``, the product so far, the pending ``*``/``/``, and how many
    unary minus signs stood before the ``(`` that opened it."""

    total: Fraction | None = None
    add_op: str = "+"
    product: Fraction | None = None
    mul_op: str | None = None
    negations: int = 0

    def push_factor(self, value: Fraction) -> None:
        if self.mul_op is None:
            self.product = value
        elif self.mul_op == "*":
            self.product = self.product * value
        elif value == 0:
            raise ExpressionError("division by zero")
        else:
            self.product = self.product / value
        self.mul_op = None

    def close_term(self) -> None:
        if self.total is None:
            self.total = self.product
        else:
            self.total = (
                self.total + self.product if self.add_op == "+" else self.total - self.product
            )
        self.product = None


def _evaluate(
    tokens: list[str], max_depth: int, allow_unary_minus: bool
) -> tuple[Fraction, list[int]]:
    """Evaluate the grammar

        expr := term (('+' | '-') term)* ; term := factor (('*' | '/') factor)* ;
        factor := NUMBER | '(' expr ')' | '-' factor (only when unary minus is allowed)

    without recursion: an explicit stack of :class:`_Level` for open parentheses, so the
    depth limit is ours alone and Python's recursion limit never matters. Operations are
    applied in the order a recursive-descent parser would apply them (left to right within a
    level), and errors are the ones it would raise first. The nesting depth of a factor counts
    the open parentheses and unary minus signs around it, as the recursive grammar nests.
    """
    numbers: list[int] = []
    levels = [_Level()]
    depth = 0  # nesting depth of the next factor
    unary = 0  # unary minus signs directly before the next factor
    pos = 0
    while True:
        # A factor is expected.
        if depth > max_depth:
            raise ExpressionError(f"nested deeper than {max_depth} levels")
        if pos == len(tokens):
            raise ExpressionError("expression ends too early")
        token = tokens[pos]
        pos += 1
        if token == "(":
            levels.append(_Level(negations=unary))
            unary = 0
            depth += 1
            continue
        if token == "-":
            if not allow_unary_minus:
                raise ExpressionError("unary minus is not allowed")
            unary += 1
            depth += 1
            continue
        if not token.isdigit():
            raise ExpressionError(f"unexpected {token!r}")
        numbers.append(int(token))
        value = -Fraction(int(token)) if unary % 2 else Fraction(int(token))
        depth -= unary
        unary = 0
        # A complete factor: fold it in, then close levels while the next token is ')'.
        while True:
            level = levels[-1]
            level.push_factor(value)
            following = tokens[pos] if pos < len(tokens) else None
            if following in ("*", "/"):
                level.mul_op = following
                pos += 1
                break
            level.close_term()
            if following in ("+", "-"):
                level.add_op = following
                pos += 1
                break
            if len(levels) == 1:
                if following is None:
                    return level.total, numbers
                raise ExpressionError(f"unexpected {following!r} after a complete expression")
            if following != ")":
                raise ExpressionError("missing ')'")
            pos += 1
            levels.pop()
            value = -level.total if level.negations % 2 else level.total
            depth -= 1 + level.negations


def parse_expression(
    text: str,
    *,
    max_length: int = 256,
    max_depth: int = 16,
    max_tokens: int = 128,
    max_digits: int = 9,
    allow_unary_minus: bool = False,
) -> Expression:
    """Parse and evaluate an arithmetic expression exactly, safely.

    Grammar: non-negative integer literals (ASCII digits), binary ``+ - * /`` (``× ÷ −``
    accepted as aliases) with the usual precedence and left associativity, parentheses.
    Unary minus is rejected unless ``allow_unary_minus`` (Countdown forbids negating a number).
    Values are :class:`fractions.Fraction`, so ``7/2*2`` is exactly 7.

    Raises :class:`ExpressionError` (a ``ValueError``) for anything else: syntax errors,
    division by zero, text longer than ``max_length`` characters, more than ``max_tokens``
    tokens, numbers longer than ``max_digits`` digits, parentheses (or unary minus signs)
    nested deeper than ``max_depth``. The limits bound time and memory for any input. The
    parser is iterative (an explicit stack), so any ``max_depth`` is safe: deep nesting fails
    with ``ExpressionError`` or parses, never with ``RecursionError``.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"expected a string, got {type(text).__name__}")
    if len(text) > max_length:
        raise ExpressionError(f"longer than {max_length} characters")
    tokens = _tokenize(text, max_tokens, max_digits)
    if not tokens:
        raise ExpressionError("empty expression")
    value, used = _evaluate(tokens, max_depth, allow_unary_minus)
    return Expression(value, tuple(used))


def uses_available_numbers(used: Sequence[int], available: Sequence[int]) -> bool:
    """Whether ``used`` takes each number at most as often as it appears in ``available``."""
    pool = list(available)
    for n in used:
        if n not in pool:
            return False
        pool.remove(n)
    return True


# ------------------------------------------------------------------------------ countdown
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


class Countdown(Task):
    """Countdown: combine the given numbers with ``+ - * /`` (each at most once) to reach the
    target.

    Prompt ``"Use 3 7 25 50 to make 84:"``; the expected completion is
    ``"<answer>EXPR</answer>"``. Problems are made solvable by building the target from a
    random expression over a random subset (≥ 2) of the numbers, with only exact divisions and
    positive intermediate results; the reference ``solution`` is that expression.

    Args:
      count: how many numbers are given (2–6).
      max_number: numbers are uniform in ``[1, max_number]``.
      max_target: targets are in ``[1, max_target]``.
      test_percent: share of problems held out (by a hash of the sorted numbers and target).

    Reward: ``format`` if the completion holds an ``<answer>…</answer>`` block (the last one
    counts) whose content parses (:func:`parse_expression`); ``correct`` if moreover it uses
    only the given numbers, each at most once, and equals the target exactly. Division by zero
    parses but is wrong.
    """

    name = "countdown"

    def __init__(
        self, count: int = 3, max_number: int = 20, max_target: int = 100, test_percent: int = 10
    ):
        if isinstance(count, bool) or not isinstance(count, int) or not 2 <= count <= 6:
            raise ValueError(f"count must be an integer in [2, 6], got {count!r}")
        if not 2 <= max_number <= 10_000 or not 1 <= max_target <= 1_000_000:
            raise ValueError("max_number must be in [2, 10000] and max_target in [1, 1e6]")
        if not 1 <= test_percent <= 50:
            raise ValueError(f"test_percent must be in [1, 50], got {test_percent}")
        self.count, self.max_number, self.max_target = count, max_number, max_target
        self.test_percent = test_percent

    def describe(self) -> dict:
        return {
            "task": self.name,
            "count": self.count,
            "max_number": self.max_number,
            "max_target": self.max_target,
        }

    def _build(self, values: list[int], rng: np.random.Generator) -> tuple[str, Fraction]:
        """A random expression over ``values`` (all used) with positive integer intermediates
        (subtraction puts the larger operand first, inexact divisions become products)."""
        items = [(str(v), Fraction(v)) for v in values]
        while len(items) > 1:
            i, j = (int(x) for x in rng.choice(len(items), 2, replace=False))
            (ta, va), (tb, vb) = items[i], items[j]
            op = "+-*/"[int(rng.integers(0, 4))]
            if op == "-" and va <= vb:
                (ta, va), (tb, vb) = (tb, vb), (ta, va)
            if op == "-" and va == vb:
                op = "+"
            if op == "/" and (va / vb).denominator != 1:
                op = "*"
            value = {"+": va + vb, "-": va - vb, "*": va * vb, "/": va / vb}[op]
            text = f"({ta}{op}{tb})"
            items = [it for k, it in enumerate(items) if k not in (i, j)] + [(text, value)]
        text, value = items[0]
        return (text[1:-1] if text.startswith("(") else text), value

    def sample(self, split: str, count: int, rng: np.random.Generator) -> list[Problem]:
        def make(rng):
            numbers = [int(x) for x in rng.integers(1, self.max_number + 1, self.count)]
            used = int(rng.integers(2, self.count + 1))
            subset = [numbers[k] for k in rng.choice(self.count, used, replace=False)]
            built = self._build(subset, rng)
            if built is None or not (
                built[1].denominator == 1 and 1 <= built[1] <= self.max_target
            ):
                return None
            text, target = built[0], int(built[1])
            prompt = f"Use {' '.join(map(str, numbers))} to make {target}:"
            key = f"{sorted(numbers)}->{target}"
            problem = Problem(prompt, f"<answer>{text}</answer>", Fraction(target), tuple(numbers))
            return key, problem

        return _reject_sample(make, split, count, rng, self.test_percent)

    def reward(self, problem: Problem, completion: str) -> Reward:
        if not isinstance(completion, str) or len(completion) > MAX_COMPLETION_CHARS:
            return Reward(0.0, 0.0)
        blocks = _ANSWER_RE.findall(completion)
        if not blocks:
            return Reward(0.0, 0.0)
        try:
            expression = parse_expression(blocks[-1])
        except ExpressionError as err:
            if "division by zero" in str(err):  # well-formed, but wrong
                return Reward(0.0, 1.0)
            return Reward(0.0, 0.0)
        correct = expression.value == problem.target and uses_available_numbers(
            expression.numbers, problem.numbers
        )
        return Reward(float(correct), 1.0)


# ------------------------------------------------------------------------------ GSM8K
_MARK = "####"


def gsm8k_reference(answer: str) -> Fraction:
    """The number after the last ``#### `` of a GSM8K answer (commas allowed), exactly.

    Raises ``ValueError`` when there is no ``####`` or what follows is not a number."""
    if "####" not in answer:
        raise ValueError("the answer has no '#### <number>' line")
    final = answer.rsplit("####", 1)[1].strip()
    value = parse_number(final.split()[0] if final else "")
    if value is None:
        raise ValueError(f"'#### {final[:40]}' is not a number")
    return value


def load_gsm8k(path: str | os.PathLike) -> list[Problem]:
    """Problems from a GSM8K-style JSON-lines file: one object per line with string fields
    ``question`` and ``answer``; the answer ends with ``#### <number>``.

    The prompt is ``"Question: {question}\\nAnswer:"`` and the solution ``" " + answer``.
    Blank lines are skipped. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` naming the file and line for invalid JSON, a missing or non-string field,
    or a missing or non-numeric ``####`` answer, and for a file with no problems.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"GSM8K file {path} not found: pass a JSON-lines file with 'question' and 'answer' "
            "fields (e.g. the GSM8K train.jsonl)"
        )
    problems = []
    with open(path, encoding="utf-8", errors="strict") as handle:
        try:
            lines = list(handle)
        except UnicodeDecodeError as err:
            raise ValueError(f"{path} is not UTF-8 text: {err}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object with 'question' and 'answer'")
        for field in ("question", "answer"):
            if not isinstance(record.get(field), str):
                raise ValueError(f"{where}: missing or non-string field {field!r}")
        try:
            target = gsm8k_reference(record["answer"])
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        question = record["question"].strip()
        problems.append(
            Problem(f"Question: {question}\nAnswer:", " " + record["answer"].strip(), target)
        )
    if not problems:
        raise ValueError(f"{path} holds no problems")
    return problems


class GSM8K(Task):
    """GSM8K-style word problems from local JSON-lines files (see :func:`load_gsm8k`).

    Args:
      path: the training file.
      test_path: a separate held-out file; without it, about ``test_percent`` % of ``path``'s
        problems (by a hash of the question) are held out.

    Reward: the answer is the numeral right after the completion's last ``####`` or, without a
    ``####``, its last numeral, read by the rule of :func:`parse_number` (a numeral that is
    not a well-formed number, such as ``"5/2"`` or ``"7,2"``, is a wrong answer, not skipped).
    ``correct`` if the answer equals the reference exactly (``"1,000"`` = ``1000`` =
    ``1000.0`` = ``"1000."``; but ``"#### 7,2"``, ``"#### 72e9"``, ``"#### 72/5"`` and
    ``"#### 72.000000000000000000001"`` are not 72); ``format`` if the last ``####`` is
    followed by a well-formed number. A last ``####`` with no well-formed number after it
    scores 0/0 (the earlier ones do not count).
    """

    name = "gsm8k"

    def __init__(
        self,
        path: str | os.PathLike,
        test_path: str | os.PathLike | None = None,
        test_percent: int = 10,
    ):
        problems = load_gsm8k(path)
        if test_path:
            train, test = problems, load_gsm8k(test_path)
        else:
            train = [p for p in problems if split_of(p.prompt, test_percent) == "train"]
            test = [p for p in problems if split_of(p.prompt, test_percent) == "test"]
        held = {p.prompt for p in test}
        train = [p for p in train if p.prompt not in held]  # disjoint even across files
        if not train or not test:
            raise ValueError(
                f"{path}: {len(train)} train and {len(test)} test problems; both splits need at "
                "least one (give more problems or a separate test file)"
            )
        self.splits = {"train": train, "test": test}
        self.path, self.test_path = str(path), str(test_path) if test_path else None

    def describe(self) -> dict:
        return {"task": self.name, "path": self.path, "test_path": self.test_path}

    def sample(self, split: str, count: int, rng: np.random.Generator) -> list[Problem]:
        _check_split(split)
        pool = self.splits[split]
        return [pool[int(i)] for i in rng.integers(0, len(pool), count)]

    def problems(self, split: str, count: int, seed: int = 0) -> list[Problem]:
        """Up to ``count`` distinct problems of ``split`` in a seeded order."""
        _check_split(split)
        pool = self.splits[split]
        order = np.random.default_rng(seed).permutation(len(pool))[:count]
        return [pool[int(i)] for i in order]

    def reward(self, problem: Problem, completion: str) -> Reward:
        if not isinstance(completion, str) or len(completion) > MAX_COMPLETION_CHARS:
            return Reward(0.0, 0.0)
        marked = _MARK in completion
        if marked:  # the numeral right after the last '####'
            match = _LEADING_NUMERAL_RE.match(completion, completion.rindex(_MARK) + len(_MARK))
            numeral = match.group(1) if match else None
        else:  # the last numeral of the text
            numerals = _NUMERAL_RE.findall(completion)
            numeral = numerals[-1] if numerals else None
        answer = _value(numeral)
        correct = answer is not None and answer == problem.target
        return Reward(float(correct), float(marked and _well_formed(numeral)))


TASKS = ("arithmetic", "countdown", "gsm8k")
