"""Which leaves are perturbed how: a rule over tree paths.

Each parameter leaf is one of three kinds:

- ``"lowrank"``: a matrix (or a stack of matrices on leading axes) perturbed by ``A Bᵀ/√r``;
- ``"full"``: ordinary full-rank Gaussian noise (biases, norms; every leaf under OpenES);
- ``"frozen"``: not perturbed and not updated.

The default rule makes every leaf with ``ndim ≥ 2`` low-rank and the rest full-rank. A rule can
be a callable ``(path, leaf) -> kind`` or a mapping from regular expressions (searched in the
path string, first match wins) to kinds, falling back to the default.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from eggroll.noise import leaf_id

KINDS = ("lowrank", "full", "frozen")
LeafRule = Callable[[str, Any], str] | Mapping[str, str] | None


def path_string(path: tuple) -> str:
    """``(DictKey('layers'), SequenceKey(0), GetAttrKey('w'))`` → ``"layers/0/w"``."""
    parts = []
    for entry in path:
        for attr in ("key", "idx", "name"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def default_rule(path: str, leaf: Any) -> str:
    """Matrices (``ndim ≥ 2``) are low-rank; vectors and scalars get full-rank noise."""
    return "lowrank" if jnp.ndim(leaf) >= 2 else "full"


def all_full_rule(path: str, leaf: Any) -> str:
    """Every leaf gets full-rank noise (the OpenES baseline)."""
    return "full"


def resolve_rule(rule: LeafRule, fallback: Callable[[str, Any], str]) -> Callable[[str, Any], str]:
    """Turn a user rule (callable, mapping or None) into a callable ``(path, leaf) -> kind``."""
    if rule is None:
        return fallback
    if callable(rule):
        return rule
    if isinstance(rule, Mapping):
        patterns = []
        for pattern, kind in rule.items():
            if kind not in KINDS:
                raise ValueError(f"leaf rule maps {pattern!r} to {kind!r}; use one of {KINDS}")
            patterns.append((re.compile(pattern), kind))

        def mapped(path: str, leaf: Any) -> str:
            for compiled, kind in patterns:
                if compiled.search(path):
                    return kind
            return fallback(path, leaf)

        return mapped
    raise TypeError(f"leaf_rule must be a callable, a mapping or None, got {type(rule).__name__}")


@dataclasses.dataclass(frozen=True)
class LeafSpec:
    """Static facts about one parameter leaf.

    ``path`` is its tree path string (``"layers/0/w"``), ``id`` its noise id (a hash of the
    path, :func:`eggroll.noise.leaf_id`), ``kind`` one of :data:`KINDS` and ``shape`` its full
    shape: any stacking axes, then ``(n_in, n_out)`` for a matrix.
    """

    path: str
    id: int
    kind: str
    shape: tuple[int, ...]

    @property
    def lead(self) -> tuple[int, ...]:
        """Stacking axes in front of the matrix axes (empty for a plain matrix)."""
        return self.shape[:-2]

    @property
    def n_in(self) -> int:
        return self.shape[-2]

    @property
    def n_out(self) -> int:
        return self.shape[-1]


def leaf_specs(params: Any, rule: Callable[[str, Any], str]) -> list[LeafSpec]:
    """One :class:`LeafSpec` per leaf of ``params`` in ``tree_flatten`` order.

    Raises ``ValueError`` for an unknown kind, a low-rank leaf with fewer than 2 dims, or two
    paths that hash to the same noise id.
    """
    specs = []
    seen: dict[int, str] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = path_string(path)
        kind = rule(name, leaf)
        if kind not in KINDS:
            raise ValueError(f"leaf rule returned {kind!r} for {name!r}; use one of {KINDS}")
        shape = tuple(jnp.shape(leaf))
        if kind == "lowrank" and len(shape) < 2:
            raise ValueError(
                f"leaf {name!r} of shape {shape} cannot be low-rank (needs ndim ≥ 2); "
                "mark it 'full' or 'frozen' in leaf_rule"
            )
        lid = leaf_id(name)
        if lid in seen:
            raise ValueError(f"leaf paths {seen[lid]!r} and {name!r} collide; rename one")
        seen[lid] = name
        specs.append(LeafSpec(name, lid, kind, shape))
    return specs
