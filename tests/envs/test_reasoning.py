"""Reasoning tasks: the safe expression parser, rewards against adversarial completions,
deterministic disjoint splits, GSM8K files."""

import json
import re
import sys
from fractions import Fraction

import pytest

from eggroll.envs import reasoning as rs

# ------------------------------------------------------------------------------ the parser


@pytest.mark.parametrize(
    ("text", "value", "numbers"),
    [
        ("2+3*4", 14, (2, 3, 4)),  # * before +
        ("(2+3)*4", 20, (2, 3, 4)),
        ("8-3-2", 3, (8, 3, 2)),  # left associative
        ("8/4/2", 1, (8, 4, 2)),
        ("7/2*2", 7, (7, 2, 2)),  # exact rationals, no float rounding
        ("1/3+1/3+1/3", 1, (1, 3, 1, 3, 1, 3)),
        (" ( 50 + 25 ) × 2 ÷ 5 − 1 ", 29, (50, 25, 2, 5, 1)),  # unicode operator aliases
        ("((((6))))", 6, (6,)),
        ("10-2*3+4/2", 6, (10, 2, 3, 4, 2)),
    ],
)
def test_parser_precedence_parentheses_and_exact_values(text, value, numbers):
    expression = rs.parse_expression(text)
    assert expression.value == Fraction(value)
    assert expression.numbers == numbers


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("1/0", "division by zero"),
        ("5/(3-3)", "division by zero"),
        ("-1+2", "unary minus"),
        ("3*-2", "unary minus"),
        ("((1)", "missing ')'"),
        ("(1))", "after a complete expression"),
        ("1 2", "after a complete expression"),
        ("1+", "ends too early"),
        ("2**3", "unexpected '*'"),
        ("__import__('os')", "unexpected character"),
        ("1e5", "unexpected character"),
        ("1.5", "unexpected character"),
        ("٣+1", "unexpected character"),  # Arabic-Indic digit: not an ASCII number
        ("(" * 17 + "1" + ")" * 17, "nested deeper than 16"),
        ("1" * 10, "more than 9 digits"),
        ("1+" * 64 + "1", "more than 128 tokens"),
        ("1" + " " * 300, "longer than 256"),
    ],
)
def test_parser_rejects_bad_expressions_with_a_reason(text, message):
    with pytest.raises(rs.ExpressionError, match=re.escape(message)):
        rs.parse_expression(text)


def test_parser_limits_are_settings_and_unary_minus_is_a_policy():
    assert rs.parse_expression("-(2-5)", allow_unary_minus=True).value == 3
    assert rs.parse_expression("--4", allow_unary_minus=True).value == 4
    with pytest.raises(rs.ExpressionError, match="nested deeper"):  # unary chains count too
        rs.parse_expression("-" * 20 + "1", allow_unary_minus=True)
    deep = "(" * 40 + "1" + ")" * 40
    assert rs.parse_expression(deep, max_depth=40).value == 1
    # A huge input is refused by its length before any work (no recursion error, no hang).
    with pytest.raises(rs.ExpressionError, match="longer than"):
        rs.parse_expression("(" * 100_000 + "1" + ")" * 100_000, max_depth=10**6)
    with pytest.raises(rs.ExpressionError, match="expected a string"):
        rs.parse_expression(None)


def test_deep_nesting_never_raises_recursion_error_whatever_the_depth_limit():
    """The parser keeps its own stack: a caller raising every limit gets a value or an
    ExpressionError, even with nesting far beyond Python's recursion limit."""
    depth = sys.getrecursionlimit() + 500
    limits = {"max_length": 10**6, "max_tokens": 10**6, "max_depth": 10**6}
    deep = "(" * depth + "1" + ")" * depth
    assert rs.parse_expression(deep, **limits).value == 1
    unary = "-" * depth + "1"
    assert rs.parse_expression(unary, allow_unary_minus=True, **limits).value == (-1) ** depth
    mixed = "(-" * depth + "2" + ")" * depth
    assert rs.parse_expression(mixed, allow_unary_minus=True, **limits).value == 2 * (-1) ** depth
    with pytest.raises(rs.ExpressionError, match="missing"):
        rs.parse_expression("(" * depth + "1", **limits)
    with pytest.raises(rs.ExpressionError, match=f"nested deeper than {depth - 1} levels"):
        rs.parse_expression(deep, **{**limits, "max_depth": depth - 1})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2*(3+4)*5-6/(1+2)", 68),
        ("((2))*((3)+(4))", 14),
        ("100/(2*(3+2))/2", 5),
        ("1-(2-(3-(4-5)))", 3),
    ],
)
def test_iterative_parser_keeps_precedence_across_levels(text, value):
    assert rs.parse_expression(text).value == value


def test_number_reuse_counts_multiplicity():
    assert rs.uses_available_numbers([3, 7], [7, 3, 5])
    assert rs.uses_available_numbers([3, 3], [3, 3, 5])
    assert not rs.uses_available_numbers([3, 3], [3, 5])
    assert not rs.uses_available_numbers([4], [3, 5])
    assert rs.uses_available_numbers([], [1])


# ------------------------------------------------------------------------------ countdown
COUNTDOWN = rs.Countdown(count=4, max_number=50, max_target=200)
CD = rs.Problem(
    "Use 3 7 25 50 to make 82:", "<answer>3*25+7</answer>", Fraction(82), (3, 7, 25, 50)
)
HUGE = "9" * 1_000_000


@pytest.mark.parametrize(
    ("completion", "correct", "fmt"),
    [
        ("<answer>3*25+7</answer>", 1, 1),
        ("<answer> 50 + 25 + 7 </answer>", 1, 1),  # a subset of the numbers is fine
        ("first <answer>99</answer>, no: <answer>(25×3)+7</answer>", 1, 1),  # the last counts
        ("<answer>3*25+7</answer> <answer>1</answer>", 0, 1),
        ("<answer>25*3+7+3-3</answer>", 0, 1),  # 3 is given once, used twice
        ("<answer>82</answer>", 0, 1),  # 82 is not a given number
        ("<answer>50+25+7+1-1</answer>", 0, 1),  # 1 is not given
        ("<answer>50/(25-25)+7</answer>", 0, 1),  # division by zero: well-formed, wrong
        ("<answer>-3+85</answer>", 0, 0),  # unary minus is not an operation of the game
        ("<answer>3*25+7=82</answer>", 0, 0),
        ("<answer></answer>", 0, 0),
        ("<answer>3*25+7", 0, 0),
        ("3*25+7", 0, 0),
        ("", 0, 0),
        ("<answer>" + "(" * 30 + "82" + ")" * 30 + "</answer>", 0, 0),  # too deep
        ("<answer>" + "(" * 5000 + "7" + ")" * 5000 + "</answer>", 0, 0),  # too long
        ("<answer>3*25+7</answer>" * 1000, 0, 0),  # enormous output is not parsed at all
        ("<answer>" + HUGE + "</answer>", 0, 0),
        ("\x00\xff\ufffd<answer>\ud800</answer>", 0, 0),  # garbage and a lone surrogate
        ("<answer>٣*٢٥+٧</answer>", 0, 0),  # non-ASCII digits
    ],
)
def test_countdown_reward_survives_adversarial_completions(completion, correct, fmt):
    assert COUNTDOWN.reward(CD, completion) == rs.Reward(correct, fmt)


def test_countdown_problems_are_solvable_deterministic_and_split():
    problems = COUNTDOWN.problems("train", 40, seed=3)
    assert problems == COUNTDOWN.problems("train", 40, seed=3)
    assert problems != COUNTDOWN.problems("train", 40, seed=4)
    for p in problems:  # the reference solution earns full marks under the task's own reward
        assert COUNTDOWN.reward(p, p.solution) == rs.Reward(1.0, 1.0)
        assert len(p.numbers) == 4 and all(1 <= n <= 50 for n in p.numbers)
        assert 1 <= p.target <= 200 and p.target.denominator == 1
    test = COUNTDOWN.problems("test", 40, seed=3)
    key = lambda p: f"{sorted(p.numbers)}->{p.target}"  # noqa: E731
    assert {key(p) for p in problems}.isdisjoint({key(p) for p in test})
    with pytest.raises(ValueError, match="too small"):  # every problem of this space is train
        rs.Countdown(count=2, max_number=2, max_target=2).problems("test", 1)


# ------------------------------------------------------------------------------ arithmetic
ADD = rs.Arithmetic(digits=2, ops="+")
SUM = rs.Problem("47+38=", "85", Fraction(85))


@pytest.mark.parametrize(
    ("completion", "correct", "fmt"),
    [
        ("85", 1, 1),
        (" 85 \n", 1, 1),
        ("085", 1, 1),
        ("85abc", 1, 0),  # right number, wrong form: the two rewards stay separate
        ("85.0", 1, 0),
        ("85.", 1, 0),  # a period that ends a sentence
        ("85. Done", 1, 0),
        ("+85", 1, 0),  # the same number, not the bare form
        ("85, I think", 1, 0),  # a comma before a space is punctuation
        ("85.5", 0, 0),  # a prefix of another number is not that number
        ("85,5", 0, 0),  # not 85; and not a number: groups after a comma have 3 digits
        ("85e3", 0, 0),
        ("85E-3", 0, 0),
        ("85/2", 0, 0),
        ("85.000000000000000000001", 0, 0),
        ("85.0.1", 0, 0),
        ("85,000", 0, 0),  # 85000
        ("851", 0, 1),
        ("8 5", 0, 0),
        ("-85", 0, 1),
        ("", 0, 0),
        ("٨٥", 0, 0),  # Arabic-Indic digits are not ASCII digits
        ("８５", 0, 0),  # fullwidth digits
        ("9" * 50, 0, 0),
        ("85" + "0" * 10_000, 0, 0),
        (HUGE, 0, 0),
        ("\x00\xff85", 0, 0),
    ],
)
def test_arithmetic_reward_survives_adversarial_completions(completion, correct, fmt):
    assert ADD.reward(SUM, completion) == rs.Reward(correct, fmt)


def test_arithmetic_thousands_separators_must_be_well_formed():
    big = rs.Problem("617*2=", "1234", Fraction(1234))
    assert ADD.reward(big, "1,234") == rs.Reward(1.0, 0.0)
    assert ADD.reward(big, "1234") == rs.Reward(1.0, 1.0)
    for wrong in ("1,23,4", "12,34", "1,2345", "1234,5", "1,234.5", "1,234,0"):
        assert ADD.reward(big, wrong).correct == 0.0, wrong


def test_arithmetic_reward_rejects_non_strings_and_batches_rewards():
    assert ADD.reward(SUM, None) == rs.Reward(0.0, 0.0)
    correct, fmt = ADD.rewards([SUM, SUM, SUM], ["85", "85x", "1"])
    assert correct.tolist() == [1, 1, 0] and fmt.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="3 problems but 2 completions"):
        ADD.rewards([SUM] * 3, ["85"] * 2)


def test_arithmetic_problems_are_deterministic_disjoint_and_correct():
    task = rs.Arithmetic(digits=3, ops="+-*")
    train = task.problems("train", 300, seed=0)
    test = task.problems("test", 300, seed=0)
    assert train == task.problems("train", 300, seed=0)
    assert {p.prompt for p in train}.isdisjoint({p.prompt for p in test})
    assert all(rs.split_of(p.prompt) == "test" for p in test)
    ops = {next(c for c in p.prompt[1:] if c in "+-*") for p in train}
    assert ops == {"+", "-", "*"}
    for p in train + test:
        assert task.reward(p, p.solution) == rs.Reward(1.0, 1.0)
    assert any(p.target < 0 for p in train)  # subtraction gives negative answers


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"digits": 0}, "digits"),
        ({"digits": 2.5}, "digits"),
        ({"ops": "/"}, "ops"),
        ({"ops": ""}, "ops"),
        ({"ops": "++"}, "ops"),
    ],
)
def test_arithmetic_settings_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rs.Arithmetic(**kwargs)
    with pytest.raises(ValueError, match="split must be one of"):
        ADD.problems("valid", 1)


# ------------------------------------------------------------------------------ GSM8K
def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _record(question, answer):
    return json.dumps({"question": question, "answer": answer})


def test_gsm8k_loads_answers_after_hashes_with_commas(tmp_path):
    path = _write(
        tmp_path / "train.jsonl",
        [
            _record("How many?", "Some <<2*3=6>> work.\n#### 1,234"),
            "",
            _record("Debt?", "They owe.\n#### -7"),
            _record("Price?", "Half.\n#### 2.50"),
        ],
    )
    problems = rs.load_gsm8k(path)
    assert [p.target for p in problems] == [Fraction(1234), Fraction(-7), Fraction(5, 2)]
    assert problems[0].prompt == "Question: How many?\nAnswer:"
    assert problems[0].solution.endswith("#### 1,234")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["{not json"], ":1: not valid JSON"),
        ([_record("q", "#### 1"), "[1, 2]"], ":2: expected a JSON object"),
        ([json.dumps({"question": "q"})], "missing or non-string field 'answer'"),
        ([json.dumps({"question": 3, "answer": "#### 1"})], "field 'question'"),
        ([_record("q", "no final line")], ":1: the answer has no '#### <number>'"),
        ([_record("q", "#### seven")], "'#### seven' is not a number"),
        ([_record("q", "#### ")], "is not a number"),
        (["", "  "], "holds no problems"),
    ],
)
def test_gsm8k_bad_files_say_what_and_where(tmp_path, lines, message):
    path = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ValueError, match=message) as err:
        rs.load_gsm8k(path)
    assert str(path) in str(err.value)


def test_gsm8k_missing_and_binary_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="question.*answer"):
        rs.load_gsm8k(tmp_path / "nope.jsonl")
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not UTF-8"):
        rs.load_gsm8k(binary)


def test_gsm8k_task_splits_and_rewards(tmp_path):
    lines = [_record(f"What is {i} plus {i}?", f"Double.\n#### {2 * i:,}") for i in range(400)]
    task = rs.GSM8K(_write(tmp_path / "all.jsonl", lines))
    train, test = task.splits["train"], task.splits["test"]
    assert len(train) + len(test) == 400 and 10 < len(test) < 80
    assert {p.prompt for p in train}.isdisjoint({p.prompt for p in test})
    assert task.problems("test", 5, seed=1) == task.problems("test", 5, seed=1)
    assert len(task.problems("test", 10_000)) == len(test)  # distinct problems, no repeats
    separate = rs.GSM8K(
        _write(tmp_path / "train.jsonl", lines[:50]), _write(tmp_path / "test.jsonl", lines[40:60])
    )
    assert len(separate.splits["test"]) == 20 and len(separate.splits["train"]) == 40

    p = rs.Problem("Question: ...\nAnswer:", "", Fraction(1234))
    cases = {
        "so #### 1,234": (1, 1),
        "#### 1234.00": (1, 1),
        "The answer is 1234.": (1, 0),  # no '####': the last number is graded, format 0
        "#### 12 and then 1234": (0, 1),
        "1234 but #### 5": (0, 1),
        "####": (0, 0),
        "": (0, 0),
        "#### ١٢٣٤": (0, 0),
        HUGE: (0, 0),
        "#### " + "1" * 60: (0, 1),
        "#### 1234.": (1, 1),  # a period that ends the sentence
        "#### +1234": (1, 1),
        "#### 1234, done": (1, 1),
        "#### 12,34": (0, 0),  # malformed grouping: not a number
        "#### 1,2345": (0, 0),
        "#### 1234e0": (0, 0),
        "#### 1234/1": (0, 0),
        "#### 1234.5": (0, 1),
        "#### 1234 then #### 7,2": (0, 0),  # the last #### counts, and it has no number
        "It is 1234e9": (0, 0),  # no '####': no whole number at all
        "It is 12,34": (0, 0),
        "1234 apples, 5/2 pies": (0, 0),  # no "####": the last numeral is 5/2, not a number
        "1234 apples and 2.5 pies, so 1234": (1, 0),
    }
    for completion, expected in cases.items():
        assert task.reward(p, completion) == rs.Reward(*map(float, expected)), completion
    with pytest.raises(ValueError, match="both splits need"):
        rs.GSM8K(_write(tmp_path / "one.jsonl", lines[:1]))

    seventy_two = rs.Problem("Question: ...\nAnswer:", "", Fraction(72))
    for wrong in ("#### 7,2", "#### 72e9", "#### 72/5", "#### 72.000000000000000000001"):
        assert task.reward(seventy_two, wrong) == rs.Reward(0.0, float(wrong[-2:] == "01")), wrong
    for right in ("#### 72", "#### 72.", "#### 72.0", "#### +72", "#### 072"):
        assert task.reward(seventy_two, right) == rs.Reward(1.0, 1.0), right


def test_parse_number():
    assert rs.parse_number("1,234") == 1234
    assert rs.parse_number(" -3.25 ") == Fraction(-13, 4)
    assert rs.parse_number("7.") == 7
    assert rs.parse_number("+5") == 5
    assert rs.parse_number("12,345,678.5") == Fraction(24691357, 2)
    for bad in ("", "1e5", "inf", "nan", "٣", "1.2.3", "--1", "9" * 80, None):
        assert rs.parse_number(bad) is None
    for bad in ("7,2", "1,23", "1,2345", "12,34", ",123", "1,", "1/2", "72e9", "7..", "."):
        assert rs.parse_number(bad) is None, bad
