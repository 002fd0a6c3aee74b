"""The applications as a library: integer EGG pretraining, RL, LLM fine-tuning and the
backprop LM baseline, each a validated Config + run(); one shared run loop."""
