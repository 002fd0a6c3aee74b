"""What fitness is computed on: RL environments, text corpora, reasoning tasks."""
