"""LLM fine-tuning on reasoning tasks with verifiable rewards: EGGROLL, or the GRPO baseline.

    from eggroll.train import finetune
    summary = finetune.run(finetune.Config(generations=50, seconds=0))
    summary = finetune.run(finetune.Config(task=my_task, reward=my_reward, model="Qwen/"))

``task`` is a name (arithmetic, countdown, gsm8k) or any :class:`eggroll.envs.reasoning.Task`;
``reward``, when given, is any function ``(problem, answer_text) -> float`` and replaces the
task's correctness as the fitness (held-out accuracy stays the task's own check, and the
held-out mean reward is logged as ``eval_reward``).

Without ``--model`` the run starts from the tiny byte-level base model of the task: the one
shipped with the package (``train/base_models/``, made by ``scripts/make_base_models.py``) when
the recipe is the default one of arithmetic or Countdown, so the start is the same on every
machine; otherwise it is made on first use, pretrained with backprop
(``eggroll.models.lm_train.train_lm``) on the task's training problems for ``--base-steps``
steps (on purpose too few to master the task) and cached as a Hugging Face folder under
``$EGGROLL_CACHE/models`` (default ``~/.cache/eggroll/models``). The summary's ``base_model``
says which: ``shipped``, ``made here`` or ``given`` (``--model``).

EGGROLL, per generation: ``--prompts`` P training problems, ``--group`` G members per problem
(population N = P·G; consecutive members answer the same prompt, each with its own low-rank
perturbation), one jitted call decodes all N answers (greedy by default), the rewards are
graded on the host from the tokens, ``group_z_score(G)`` shapes them per prompt and ``tell``
steps the optimiser. GRPO (``--method grpo``): the unperturbed model samples G answers per
prompt, advantages are the same per-prompt z-scores, and one optax step follows the gradient
of ``Σ A log p(answer)``.

Held-out accuracy (greedy decoding of the unperturbed model on ``--eval-problems`` test
problems) is measured at the start, every ``--eval-every`` generations and at the end. Writes
``metrics.jsonl``, ``checkpoint.msgpack``, ``summary.json`` and ``curve.png`` into the run
folder; prints one line of JSON at exit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import eggroll as egg
from eggroll import checkpoint, distributed
from eggroll.envs import reasoning
from eggroll.models import generate, hf, llm, lm_train, rwkv7
from eggroll.models import tokenizer as tokenizer_lib
from eggroll.train import loop
from eggroll.train.config import RunOptions, arg, check_finite, check_positive

CHECKPOINT = "checkpoint.msgpack"
METHODS = ("eggroll", "grpo")
# Per-method defaults for flags left unset (tuned on the 2-digit addition demo, see
# docs/BENCHMARKS.md); the temperature default is 0 (greedy) for eggroll and 1 for grpo.
METHOD_DEFAULTS = {
    "eggroll": {"prompts": 128, "group": 16, "lr": 1e-4},
    "grpo": {"prompts": 32, "group": 8, "lr": 3e-5},
}
OPTIMIZERS = {"sgd": optax.sgd, "adam": optax.adam}
EVAL_BATCH = 256  # held-out prompts decoded per call
BASE_FORMAT = 1  # bump when the base-model recipe changes (invalidates cached models)
BASE_INFO = "eggroll_base.json"  # the recipe and its measurements, in every base-model folder
SHIPPED_MODELS = Path(__file__).resolve().parent / "base_models"  # package data
# Backprop steps of the tiny base model per task when --base-steps is not given (the other
# settings are shared); a task not listed gets DEFAULT_BASE_STEPS. Chosen so the model starts
# weak but not at zero; the measured start accuracies are in each shipped folder's BASE_INFO.
# Countdown (3 numbers ≤ 20, targets ≤ 100; AMD EPYC): 1,500 steps start at 0.35 of the 512
# held-out problems, 700 steps at 0.14 (0.19 of the first 128).
DEFAULT_BASE_STEPS = 1500
BASE_STEPS = {"arithmetic": DEFAULT_BASE_STEPS, "countdown": 700}
_COMPILED: dict[Any, Any] = {}


def _memo(key: Any, build):
    """Jitted functions keyed by everything they close over: a later run in the same process
    with the same settings (a resumed run, ``llm_compare.py``, the tests) compiles nothing."""
    if key not in _COMPILED:
        _COMPILED[key] = build()
    return _COMPILED[key]


@dataclasses.dataclass(frozen=True)
class Config(RunOptions):
    """LLM fine-tuning; every field but ``reward`` is a flag of ``eggroll finetune``."""

    # method and task
    method: str = arg("eggroll", "eggroll (ES) or grpo (backprop policy-gradient baseline)")
    task: Any = arg("arithmetic", "arithmetic, countdown or gsm8k (or a Task object)", str)
    digits: int = arg(2, "arithmetic: operands have up to this many digits")
    ops: str = arg("+", "arithmetic: operators to draw from, e.g. '+-*'")
    numbers: int = arg(3, "countdown: how many numbers are given")
    max_number: int = arg(20, "countdown: numbers are in [1, max-number]")
    max_target: int = arg(100, "countdown: targets are in [1, max-target]")
    data: str = arg("", "gsm8k: JSON-lines file with 'question' and 'answer' fields")
    eval_data: str = arg("", "gsm8k: separate held-out file (default: a hashed 10%% of --data)")
    # the model (default: a tiny byte model pretrained here on the task)
    model: str = arg("", "Hugging Face model folder (default: the tiny base model, made once)")
    # the tiny base model
    base_steps: int | None = arg(
        None, "tiny base model: backprop steps on the task (default: 1500; 700 countdown)"
    )
    base_hidden: int = arg(64, "tiny base model: width")
    base_layers: int = arg(2, "tiny base model: decoder blocks")
    base_batch: int = arg(64, "tiny base model: examples per pretraining step")
    base_lr: float = arg(3e-3, "tiny base model: peak AdamW learning rate")
    # the population / sampled group
    prompts: int | None = arg(None, "prompts P per generation (default: 128 eggroll, 32 grpo)")
    group: int | None = arg(
        None, "answers G per prompt; population N = P·G; even for eggroll (default: 16, 8)"
    )
    # EGGROLL perturbations
    sigma: float = arg(2e-3, "eggroll: noise scale σ")
    rank: int = arg(1, "eggroll: rank of each member's perturbation")
    noise: str = arg("table", "eggroll noise source: table or keys")
    # the optimiser
    lr: float | None = arg(None, "learning rate (default: 1e-4 eggroll, 3e-5 grpo)")
    lr_decay: int = arg(0, "cosine-decay the learning rate to 10%% over this many generations")
    optimizer: str = arg("adam", "sgd or adam")
    freeze_vectors: bool = arg(True, "train only matrices (norm weights and biases frozen)")
    # decoding and reward
    temperature: float | None = arg(None, "decoding temperature (default: 0 = greedy for "
                                    "eggroll, 1 for grpo)")  # fmt: skip
    max_new_tokens: int = arg(0, "answer length cap (0: longest reference answer + 2)")
    format_weight: float = arg(0.0, "fitness = correct + format-weight · format")
    # budget and evaluation
    generations: int = arg(0, "budget: generations (0: no limit)")
    seconds: float = arg(1200.0, "budget: training seconds, evaluation excluded (0: no limit)")
    eval_every: int = arg(100, "generations between held-out evaluations")
    eval_problems: int = arg(512, "held-out problems per evaluation")
    reward: Callable[[reasoning.Problem, str], float] | None = dataclasses.field(
        default=None, metadata={"cli": False}
    )

    def __post_init__(self):
        check_finite(self)
        if self.reward is not None and not callable(self.reward):
            raise ValueError("reward must be a function (problem, answer_text) -> float")
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {METHODS}, got {self.method!r}")
        for name, value in METHOD_DEFAULTS[self.method].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.base_steps is None:  # depends on the task's name only: the digest stays fixed
            name = self.task if isinstance(self.task, str) else getattr(self.task, "name", "")
            object.__setattr__(self, "base_steps", BASE_STEPS.get(name, DEFAULT_BASE_STEPS))
        if isinstance(self.task, str) and self.task not in reasoning.TASKS:
            raise ValueError(f"--task must be one of {reasoning.TASKS}, got {self.task!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {sorted(OPTIMIZERS)}")
        if self.noise not in ("keys", "table"):
            raise ValueError("--noise must be 'keys' or 'table'")
        positive = "prompts rank eval_every eval_problems base_steps base_hidden base_layers"
        check_positive(self, (positive + " base_batch checkpoint_every").split())
        if self.group < 2:
            raise ValueError("--group must be ≥ 2: shaping compares the answers to one prompt")
        if self.method == "eggroll" and self.group % 2:
            raise ValueError("--group must be even for eggroll (antithetic pairs share a prompt)")
        for name in ("sigma", "lr", "base_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0")
        if self.temperature is not None and not self.temperature >= 0:
            raise ValueError("--temperature must be ≥ 0 (0: greedy)")
        if self.method == "grpo" and self.temperature == 0:
            raise ValueError(
                "--method grpo samples its answers: greedy answers to one prompt are identical "
                "and carry no advantage; use --temperature > 0"
            )
        if self.max_new_tokens < 0 or self.format_weight < 0 or self.lr_decay < 0:
            raise ValueError("--max-new-tokens, --format-weight and --lr-decay must be ≥ 0")
        if self.generations < 0 or self.seconds < 0:
            raise ValueError("--generations and --seconds must be ≥ 0")
        if self.generations == 0 and self.seconds == 0:
            raise ValueError("give a budget: --generations and/or --seconds")
        if not isinstance(self.task, str):
            if not isinstance(self.task, reasoning.Task):
                raise ValueError("task must be a name or an eggroll.envs.reasoning.Task")
            return
        if self.task == "gsm8k" and not self.data:
            raise ValueError("--task gsm8k needs --data FILE.jsonl (question/answer per line)")
        if self.task != "gsm8k" and (self.data or self.eval_data):
            raise ValueError("--data/--eval-data are for --task gsm8k")
        if self.task != "gsm8k":
            self.make_task()  # digits, ops, ... validated by the task itself

    @property
    def population(self) -> int:
        return self.prompts * self.group

    @property
    def decode_temperature(self) -> float:
        if self.temperature is not None:
            return float(self.temperature)
        return 0.0 if self.method == "eggroll" else 1.0

    def make_task(self) -> reasoning.Task:
        if not isinstance(self.task, str):
            return self.task
        if self.task == "arithmetic":
            return reasoning.Arithmetic(self.digits, self.ops)
        if self.task == "countdown":
            return reasoning.Countdown(self.numbers, self.max_number, self.max_target)
        return reasoning.GSM8K(self.data, self.eval_data or None)


# ------------------------------------------------------------------------------ tokens
@dataclasses.dataclass(frozen=True)
class Encoding:
    """How problems become token arrays: fixed prompt and answer lengths (one compile)."""

    tokenizer: Any
    prompt_len: int
    max_new_tokens: int
    stop_tokens: tuple[int, ...]
    pad_id: int

    def prompts(self, problems: list[reasoning.Problem]) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded ``(ids (B, prompt_len), mask)``; BOS first when the tokenizer has one."""
        add_bos = self.tokenizer.bos_id is not None
        return self.tokenizer.batch([p.prompt for p in problems], add_bos, self.prompt_len)

    def completions(self, tokens: np.ndarray) -> list[str]:
        """Text of each row up to (not including) its first stop token."""
        texts = []
        stops = set(self.stop_tokens)
        for row in np.asarray(tokens).tolist():
            cut = next((k for k, t in enumerate(row) if t in stops), len(row))
            texts.append(self.tokenizer.decode(row[:cut]))
        return texts


def make_encoding(
    task: reasoning.Task, tokenizer: Any, config: llm.LLMConfig, cfg: Config
) -> Encoding:
    stops = tuple(config.eos_token_id) or tuple(tokenizer.eos_ids)
    if not stops:
        raise ValueError(
            "the model defines no end-of-sequence token (config.json eos_token_id or the "
            "tokenizer's eos_token): answers could not stop; use a model that has one"
        )
    sample = task.problems("test", cfg.eval_problems, 0) + task.problems("train", 1024, 1)
    bos = 1 if tokenizer.bos_id is not None else 0
    prompt_len = max(len(tokenizer.encode(p.prompt)) for p in sample) + bos
    answer_len = max(len(tokenizer.encode(p.solution)) for p in sample) + 2
    max_new = cfg.max_new_tokens or min(answer_len, 256)
    if prompt_len + max_new > config.max_position_embeddings:
        raise ValueError(
            f"prompts of {prompt_len} tokens + {max_new} new tokens exceed the model's "
            f"{config.max_position_embeddings} positions: lower --max-new-tokens"
        )
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else stops[0]
    return Encoding(tokenizer, prompt_len, max_new, stops, pad)


# ------------------------------------------------------------------------------ base model
def cache_root() -> Path:
    return Path(os.environ.get("EGGROLL_CACHE") or Path.home() / ".cache" / "eggroll")


def base_model_spec(cfg: Config, task: reasoning.Task) -> dict[str, Any]:
    return {
        "format": BASE_FORMAT,
        **task.describe(),
        "hidden": cfg.base_hidden,
        "layers": cfg.base_layers,
        "steps": cfg.base_steps,
        "batch": cfg.base_batch,
        "lr": cfg.base_lr,
    }


def task_batches(task: reasoning.Task, tokenizer: Any, batch: int, seed: int) -> tuple[int, Any]:
    """``(length, iterator of (tokens (B, length+1), loss_mask (B, length)))``: one training
    problem per row, ``BOS prompt solution EOS`` right-padded; the loss covers the solution
    and the EOS only."""
    probe = task.problems("train", 1024, seed)
    length = max(len(tokenizer.encode(p.prompt + p.solution)) for p in probe) + 2
    eos, pad = tokenizer.eos_ids[0], tokenizer.pad_id

    def batches():
        rng = np.random.default_rng([seed, 1])
        while True:
            tokens = np.full((batch, length + 1), pad, np.int32)
            mask = np.zeros((batch, length), bool)
            for row, p in enumerate(task.sample("train", batch, rng)):
                prompt = [tokenizer.bos_id, *tokenizer.encode(p.prompt)]
                answer = [*tokenizer.encode(p.solution), eos]
                seq = (prompt + answer)[: length + 1]
                tokens[row, : len(seq)] = seq
                mask[row, len(prompt) - 1 : len(seq) - 1] = True
            yield tokens, mask

    return length, batches()


def base_model_name(cfg: Config, task: reasoning.Task) -> str:
    """``tiny-<task>-<digest>``: the folder name of the base model of this task and recipe
    (the digest is the first 12 hex digits of the SHA-256 of :func:`base_model_spec`)."""
    spec = json.dumps(base_model_spec(cfg, task), sort_keys=True)
    return f"tiny-{task.name}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


def shipped_base_model(cfg: Config, task: reasoning.Task) -> Path | None:
    """The base model shipped with the package for this task and recipe, if there is one."""
    folder = SHIPPED_MODELS / base_model_name(cfg, task)
    return folder if (folder / hf.CONFIG_FILE).exists() else None


def base_model_source(folder: Path) -> str:
    """``shipped`` (package data, the same bits everywhere) or ``made here`` (trained on this
    machine, now or by an earlier run)."""
    return "shipped" if Path(folder).resolve().parent == SHIPPED_MODELS else "made here"


def train_base_model(cfg: Config, task: reasoning.Task) -> tuple[Any, llm.LLMConfig, Any, float]:
    """``(params, model config, tokenizer, final loss)`` of the tiny base model: the recipe's
    ``--base-steps`` AdamW steps of backprop on the task's training problems (float32; the
    bits depend on the CPU kind). The final loss is the mean of the last 20 steps, in nats."""
    tokenizer = tokenizer_lib.byte_level()
    config = llm.tiny_byte_config(
        hidden_size=cfg.base_hidden,
        num_layers=cfg.base_layers,
        intermediate_size=3 * cfg.base_hidden,
    )
    params = llm.init_params(jax.random.key(0), config)
    _, batches = task_batches(task, tokenizer, cfg.base_batch, seed=0)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.base_lr, min(20, cfg.base_steps), cfg.base_steps, cfg.base_lr * 0.1
    )
    adamw = optax.adamw(schedule, weight_decay=0.01)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), adamw)
    result = lm_train.train_lm(params, config, batches, optimizer, cfg.base_steps)
    return result.params, config, tokenizer, float(np.mean(result.losses[-20:]))


def publish_model(folder: Path, params: Any, config: Any, tokenizer: Any, info: dict) -> bool:
    """Write an HF model folder plus ``info`` as :data:`BASE_INFO` to a temporary folder and
    rename it to ``folder``, so a reader never sees half a model. ``False`` (and nothing
    changed) when ``folder`` appeared meanwhile."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / BASE_INFO).write_text(json.dumps(info, indent=2) + "\n")
    hf.save(tmp, params, config, tokenizer)
    try:
        os.rename(tmp, folder)
    except OSError:  # another run made it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    return True


def ensure_base_model(cfg: Config, task: reasoning.Task, say) -> Path:
    """The tiny base model for this task and recipe: the shipped one if the package has it
    (nothing is trained or copied), else the cached one, pretrained here if missing.

    The cached one is written to a temporary folder and renamed into place, so an interrupted
    run leaves no half-written model; in a multi-process run process 0 makes it and the others
    wait."""
    shipped = shipped_base_model(cfg, task)
    if shipped is not None:
        return shipped
    folder = cache_root() / "models" / base_model_name(cfg, task)
    if not (folder / hf.CONFIG_FILE).exists() and distributed.is_main_process():
        say(f"making the tiny base model {folder} ({cfg.base_steps} backprop steps on the task)")
        started = time.perf_counter()
        params, config, tokenizer, loss = train_base_model(cfg, task)
        info = {**base_model_spec(cfg, task), "final_loss": loss}
        info["seconds"] = round(time.perf_counter() - started, 1)
        publish_model(folder, params, config, tokenizer, info)
        say(f"base model ready in {info['seconds']} s (final loss {loss:.3f} nats)")
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("eggroll-base-model")
    return folder


# ------------------------------------------------------------------------------ methods
def _is_matrix(path: str, leaf: Any) -> bool:
    """A matrix leaf of either model family (their leaf names do not collide)."""
    return "lowrank" in (llm.leaf_rule(path, leaf), rwkv7.leaf_rule(path, leaf))


def leaf_rule(freeze_vectors: bool):
    """Matrices low-rank; norm weights and biases (RWKV-7: every vector) full-rank, or frozen."""
    if not freeze_vectors:
        return lambda path, leaf: "lowrank" if _is_matrix(path, leaf) else "full"
    return lambda path, leaf: "lowrank" if _is_matrix(path, leaf) else "frozen"


def _decoder(config: Any):
    """The ``generate`` of the model family of ``config`` (RWKV-7 or the Llama family)."""
    return rwkv7.generate if isinstance(config, rwkv7.RWKV7Config) else generate.generate


def learning_rate(cfg: Config) -> float | optax.Schedule:
    """``--lr``, cosine-decayed to 10 % over ``--lr-decay`` generations when set."""
    if not cfg.lr_decay:
        return cfg.lr
    return optax.cosine_decay_schedule(cfg.lr, cfg.lr_decay, alpha=0.1)


def make_strategy(cfg: Config) -> egg.EGGROLL:
    return egg.EGGROLL(
        cfg.population,
        cfg.sigma,
        OPTIMIZERS[cfg.optimizer](learning_rate(cfg)),
        rank=cfg.rank,
        shaping=egg.shaping.group_z_score(cfg.group),
        noise=cfg.noise,
        leaf_rule=leaf_rule(cfg.freeze_vectors),
    )


def make_grpo_optimizer(cfg: Config, params: Any) -> optax.GradientTransformation:
    base = OPTIMIZERS[cfg.optimizer](learning_rate(cfg))
    if not cfg.freeze_vectors:
        return base
    labels = jax.tree_util.tree_map_with_path(
        lambda path, leaf: (
            "train"
            if getattr(path[-1], "key", "") in llm.MATRIX_LEAVES | rwkv7.MATRIX_LEAVES
            else "frozen"
        ),
        params,
    )
    return optax.multi_transform({"train": base, "frozen": optax.set_to_zero()}, labels)


def _decode_kwargs(config: llm.LLMConfig, enc: Encoding, temperature: float) -> dict:
    return dict(
        config=config,
        max_new_tokens=enc.max_new_tokens,
        temperature=temperature,
        stop_tokens=enc.stop_tokens,
        pad_id=enc.pad_id,
    )


def make_eggroll_rollout(es: egg.EGGROLL, config: llm.LLMConfig, enc: Encoding, temp: float):
    """``rollout(state, prompts (N, P), masks (N, P), key) -> tokens (N, T)``: every member
    decodes its own prompt with its own perturbation, all in one compiled call."""
    kwargs = _decode_kwargs(config, enc, temp)

    def answer(view, prompt, mask, key):
        out = _decoder(config)(view, prompt=prompt[None], prompt_mask=mask[None], key=key, **kwargs)
        return jnp.zeros((), jnp.float32), out.tokens[0]

    def rollout(state, prompts, masks, key):
        _, tokens = es.evaluate(
            state, answer, prompts, masks, key, in_axes=(0, 0, None), has_aux=True
        )
        return tokens

    return jax.jit(rollout)


def make_grpo_functions(config: llm.LLMConfig, enc: Encoding, temp: float, optimizer):
    kwargs = _decode_kwargs(config, enc, temp)

    def sample(params, prompts, masks, key):
        out = _decoder(config)(params, prompt=prompts, prompt_mask=masks, key=key, **kwargs)
        return out.tokens, out.lengths

    def update(params, opt_state, prompts, masks, tokens, lengths, advantages):
        loss, grads = jax.value_and_grad(lm_train.policy_gradient_loss)(
            params, config, prompts, masks, tokens, lengths, advantages, temp
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        info = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "update_norm": optax.tree.norm(updates),
        }
        return optax.apply_updates(params, updates), opt_state, info

    return jax.jit(sample), jax.jit(update)


def make_greedy(config: llm.LLMConfig, enc: Encoding):
    kwargs = _decode_kwargs(config, enc, 0.0)

    def greedy(params, prompts, masks):
        key = jax.random.key(0)
        return _decoder(config)(params, prompt=prompts, prompt_mask=masks, key=key, **kwargs).tokens

    return jax.jit(greedy)


DIAGNOSTIC_KEYS = ("identical_pairs", "signal_groups", "correct_mean", "format_mean")


def diagnostics(
    tokens: np.ndarray, correct: np.ndarray, fmt: np.ndarray, scores: np.ndarray, group: int
) -> dict[str, float]:
    """Per-generation health: ``identical_pairs`` (members 2p, 2p+1 wrote the same tokens:
    collapse), ``correct_mean`` vs ``format_mean`` (reward rising only through format), and
    ``signal_groups`` (prompts whose answers scored differently: the rest give zero weight)."""
    tokens = np.asarray(tokens)
    same = np.all(tokens[0::2] == tokens[1::2], axis=1)
    grouped = scores.reshape(-1, group)
    return {
        "correct_mean": float(np.mean(correct)),
        "format_mean": float(np.mean(fmt)),
        "identical_pairs": float(np.mean(same)),
        "signal_groups": float(np.mean(np.ptp(grouped, axis=1) > 0)),
    }


def summarise_diagnostics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-generation :func:`diagnostics` of a run's log summarised: ``{"mean": {key:
    mean over every generation}, "last_10pct": {key: mean over the last 10 % of the
    generations (at least one)}, "generations": n}``, for the keys the log has (``{}`` when
    it has no generation)."""
    rows = [r for r in records if "correct_mean" in r]  # one per generation
    if not rows:
        return {}
    keys = [k for k in DIAGNOSTIC_KEYS if any(k in r for r in rows)]
    last = rows[-math.ceil(0.1 * len(rows)) :]

    def means(part):
        return {k: round(float(np.mean([r[k] for r in part if k in r])), 4) for k in keys}

    return {"mean": means(rows), "last_10pct": means(last), "generations": len(rows)}


# ------------------------------------------------------------------------------ the run
class Trainer(loop.Trainer):
    """The :class:`eggroll.train.loop.Trainer` of fine-tuning (EGGROLL or GRPO)."""

    evaluate_at_start = True

    def __init__(self, config: Config, say=print):
        if config.method == "grpo" and jax.process_count() > 1:
            raise ValueError("--method grpo runs in a single process (drop the cluster flags)")
        self.config = cfg = config
        self.es = make_strategy(cfg) if cfg.method == "eggroll" else None  # config errors first
        self.task = task = cfg.make_task()
        self.model_dir = Path(cfg.model) if cfg.model else ensure_base_model(cfg, task, say)
        self.base_model = "given" if cfg.model else base_model_source(self.model_dir)
        try:
            if rwkv7.is_model_folder(self.model_dir):
                params, model = rwkv7.load(self.model_dir)
                tokenizer = rwkv7.load_tokenizer(self.model_dir, model)
            else:
                params, model = hf.load(self.model_dir)
                tokenizer = hf.load_tokenizer(self.model_dir, model)
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot load --model {self.model_dir}: {err}") from None
        self.enc = enc = make_encoding(task, tokenizer, model, cfg)
        self.eval_set = task.problems("test", cfg.eval_problems, 0)
        temperature = cfg.decode_temperature
        say(
            f"{cfg.method} on {task.describe()}: model {self.model_dir} ({self.base_model}, "
            f"{llm.count_params(params):,} parameters), population {cfg.population} = "
            f"{cfg.prompts} prompts × {cfg.group}, prompt {enc.prompt_len} + answer ≤ "
            f"{enc.max_new_tokens} tokens, temperature {temperature}, {len(self.eval_set)} "
            "held-out problems"
        )
        self.fingerprint = {
            "method": cfg.method,
            **task.describe(),
            # a shipped model by name, so a run resumes after the package moves
            "model": (
                f"shipped:{self.model_dir.name}"
                if self.base_model == "shipped"
                else str(self.model_dir)
            ),
            "prompts": cfg.prompts,
            "group": cfg.group,
            "lr": cfg.lr,
            "lr_decay": cfg.lr_decay,
            "optimizer": cfg.optimizer,
            "freeze_vectors": cfg.freeze_vectors,
            "temperature": temperature,
            "max_new_tokens": enc.max_new_tokens,
            "format_weight": cfg.format_weight,
            "seed": cfg.seed,
        }
        if cfg.reward is not None:
            self.fingerprint["reward"] = getattr(cfg.reward, "__qualname__", repr(cfg.reward))
        shapes = (model, enc.prompt_len, enc.max_new_tokens, enc.stop_tokens, enc.pad_id)
        # the seed only enters through arguments: the seeds of a comparison share the compile
        spec = (json.dumps({**self.fingerprint, "seed": None}, sort_keys=True), shapes)
        if self.es is not None:
            self.state = self.es.init(jax.random.key(cfg.seed + 1), params)
            self.fingerprint.update(self.es.config())
            spec = (json.dumps({**self.fingerprint, "seed": None}, sort_keys=True), shapes)
            self.rollout = _memo(
                ("rollout", spec), lambda: make_eggroll_rollout(self.es, model, enc, temperature)
            )
            self.tell = _memo(("tell", spec), lambda: jax.jit(self.es.tell))
            self.finite_metrics = ()
        else:
            optimizer = make_grpo_optimizer(cfg, params)
            self.state = {"params": params, "opt_state": optimizer.init(params)}
            self.sample, self.update = _memo(
                ("grpo", spec), lambda: make_grpo_functions(model, enc, temperature, optimizer)
            )
            self.finite_metrics = ("loss", "grad_norm")
        self.greedy = _memo(("greedy", shapes), lambda: make_greedy(model, enc))
        self.sample_key = jax.random.key(cfg.seed + 2)
        self.shaping = egg.shaping.group_z_score(cfg.group)
        self.rows = distributed.local_rows(cfg.population)
        self.mesh = self.es.mesh if self.es is not None else None

    @property
    def params(self) -> Any:
        return self.state.params if self.es is not None else self.state["params"]

    def rewards(self, problems: list[reasoning.Problem], texts: list[str]):
        """``(fitness, correct, format)`` per answer, float32 arrays."""
        correct, fmt = self.task.rewards(problems, texts)
        reward = self.config.reward
        if reward is None:
            fitness = correct + np.float32(self.config.format_weight) * fmt
        else:
            fitness = np.asarray([reward(p, t) for p, t in zip(problems, texts, strict=True)])
            fitness = fitness.astype(np.float32)
        return fitness, correct, fmt

    # -- the loop's protocol

    def step(self, index):
        """Prompts → answers → rewards → update (generation ``index``)."""
        cfg, enc = self.config, self.enc
        problems = self.task.sample("train", cfg.prompts, np.random.default_rng([cfg.seed, index]))
        member_problems = [p for p in problems for _ in range(cfg.group)]
        ids, masks = enc.prompts(problems)
        ids, masks = np.repeat(ids, cfg.group, 0), np.repeat(masks, cfg.group, 0)
        key = jax.random.fold_in(self.sample_key, index)
        if self.es is not None:
            global_ids = distributed.global_from_local(ids[self.rows], cfg.population, self.mesh)
            global_masks = distributed.global_from_local(
                masks[self.rows], cfg.population, self.mesh
            )
            tokens = self.rollout(self.state, global_ids, global_masks, key)
            tokens = np.asarray(distributed.to_host(tokens))
        else:
            tokens, lengths = self.sample(self.state["params"], ids, masks, key)
            tokens = np.asarray(tokens)
        scores, correct, fmt = self.rewards(member_problems, enc.completions(tokens))
        record = diagnostics(tokens, correct, fmt, scores, cfg.group)
        if self.es is not None:
            scores = jnp.asarray(scores)
            if self.mesh is not None:
                scores = distributed.replicate(scores, self.mesh)
            self.state, info = self.tell(self.state, scores)
        else:
            advantages = self.shaping(jnp.asarray(scores))
            params, opt_state, info = self.update(
                self.state["params"], self.state["opt_state"], ids, masks, tokens, lengths,
                advantages,
            )  # fmt: skip
            self.state = {"params": params, "opt_state": opt_state}
        record.update({k: float(v) for k, v in info.items()})
        return record, {}

    def evaluate(self, step, final):
        return self.accuracy(self.eval_set)

    def accuracy(self, problems: list[reasoning.Problem]) -> dict[str, float]:
        """Greedy answers of the current (unperturbed) params to ``problems``:
        ``{"eval_accuracy", "eval_format"}`` (and ``"eval_reward"`` with a caller's reward)."""
        ids, masks = self.enc.prompts(problems)
        rows = len(problems)
        pad = (-rows) % EVAL_BATCH
        ids, masks = np.concatenate([ids, ids[:pad]]), np.concatenate([masks, masks[:pad]])
        outputs = []
        for lo in range(0, len(ids), EVAL_BATCH):
            tokens = self.greedy(
                self.params, ids[lo : lo + EVAL_BATCH], masks[lo : lo + EVAL_BATCH]
            )
            outputs.append(np.asarray(distributed.to_host(tokens)))
        texts = self.enc.completions(np.concatenate(outputs)[:rows])
        fitness, correct, fmt = self.rewards(problems, texts)
        result = {"eval_accuracy": float(np.mean(correct)), "eval_format": float(np.mean(fmt))}
        if self.config.reward is not None:
            result["eval_reward"] = float(np.mean(fitness))
        return result

    def describe(self, record, evaluation):
        accuracy = (evaluation or {}).get("eval_accuracy", float("nan"))
        return (
            f"gen {record['step']} held-out {accuracy:.3f} train {record['correct_mean']:.3f} "
            f"format {record['format_mean']:.2f} same {record['identical_pairs']:.2f}"
        )

    def summary(self, result: loop.LoopResult) -> dict[str, Any]:
        cfg = self.config
        start, final = result.evaluations["start"], result.evaluations["final"]
        history = [r["eval_accuracy"] for r in result.records if "eval_accuracy" in r]
        return {
            "task": self.task.name,
            "method": cfg.method,
            "start_accuracy": round(start["eval_accuracy"], 4),
            "final_accuracy": round(final["eval_accuracy"], 4),
            "best_accuracy": round(max(history or [final["eval_accuracy"]]), 4),
            **(
                {"start_reward": start["eval_reward"], "final_reward": final["eval_reward"]}
                if cfg.reward is not None
                else {}
            ),
            "start_format": round(start["eval_format"], 4),
            "final_format": round(final["eval_format"], 4),
            "generations": result.step,
            "seconds_per_generation": round(result.train_seconds / max(result.timed_steps, 1), 4),
            "population": cfg.population,
            "prompts": cfg.prompts,
            "group": cfg.group,
            "eval_problems": len(self.eval_set),
            "task_settings": self.task.describe(),
            "model": str(self.model_dir),
            "base_model": self.base_model,
            "diagnostics": summarise_diagnostics(result.records),
        }


def start_evaluation(config: Config, say=print) -> dict[str, float]:
    """The held-out evaluation a run of ``config`` starts with, without training: greedy
    answers of the unperturbed model to ``task.problems("test", config.eval_problems, 0)`` by
    the run's own code; ``{"eval_accuracy", "eval_format"}`` in [0, 1]."""
    return Trainer(config, say).evaluate(0, final=False)


def split_accuracy(config: Config, count: int = 1024, say=print) -> dict[str, dict[str, float]]:
    """Greedy accuracy of a run's start and of its last checkpoint on the first ``count``
    problems of the task's train and test splits: how much of a gain generalises.

    ``config`` is the run's (its flags, ``run_dir`` included; the checkpoint must match them).
    Returns ``{"start": {"train", "test"}, "final": {"train", "test"}}``, accuracies in [0, 1].
    """
    if count < 1:
        raise ValueError("count must be ≥ 1")
    if not config.run_dir:
        raise ValueError("give the run's --run-dir (the folder holding its checkpoint)")
    path = Path(config.run_dir) / loop.CHECKPOINT
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}: give the run's --run-dir")
    trainer = Trainer(config, say)
    problems = {split: trainer.task.problems(split, count, 0) for split in ("train", "test")}

    def measure():
        return {s: trainer.accuracy(p)["eval_accuracy"] for s, p in problems.items()}

    start = measure()
    arrays, _ = checkpoint.load(path, trainer.arrays(), trainer.fingerprint)
    trainer.restore(arrays, {})
    return {"start": start, "final": measure()}


def run(config: Config, callbacks: Iterable[Any] = (), say=print) -> dict[str, Any]:
    """Fine-tune one model; returns the summary (also ``summary.json`` in the run folder)."""
    task_name = config.make_task().name
    default_dir = f"runs/finetune-{task_name}-{config.method}-%Y%m%d-%H%M%S"
    run_dir = Path(config.run_dir or time.strftime(default_dir))
    loop.check_run_dir(run_dir, config.resume)
    main = distributed.is_main_process()
    say = say if main else (lambda *_: None)
    trainer = Trainer(config, say)
    from eggroll.train.plot import plot_finetune

    return loop.run_loop(
        trainer,
        run_dir=run_dir,
        budget=loop.Budget(steps=config.generations, seconds=config.seconds),
        log_every=1,
        eval_every=config.eval_every,
        callbacks=callbacks,
        **config.loop_options(),
        plot=plot_finetune,
    )
