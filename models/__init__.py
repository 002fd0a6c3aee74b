"""Models written with eggroll.nn ops."""
