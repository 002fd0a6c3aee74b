"""eggroll: backprop-free optimisation with low-rank evolution strategies (EGGROLL) in JAX.

import eggroll as egg
es = egg.EGGROLL(population_size=1024, sigma=0.05, rank=1, optimizer=optax.adam(1e-2))
state = es.init(jax.random.key(0), params)
scores = es.evaluate(state, fitness, batch)
state, info = es.tell(state, scores)
"""

from eggroll import checkpoint, distributed, integer, intmath, leaves, nn, noise, shaping
from eggroll.nn import LowRank, MemberView, materialize
from eggroll.population import Population, PopulationStrategy
from eggroll.strategy import EGGROLL, ESState, OpenES, Strategy

__all__ = [
    "EGGROLL",
    "ESState",
    "LowRank",
    "MemberView",
    "OpenES",
    "Population",
    "PopulationStrategy",
    "Strategy",
    "checkpoint",
    "distributed",
    "integer",
    "intmath",
    "leaves",
    "materialize",
    "nn",
    "noise",
    "shaping",
]
__version__ = "0.1.0"
