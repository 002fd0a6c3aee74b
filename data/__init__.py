"""Data pipelines of the applications: byte corpora, baselines and stream readers."""
