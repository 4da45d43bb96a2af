"""Beyond the paper: the synthetic experiment (a language with exact probabilities, the mode-seeking
measures, their report) and the benchmark. It imports the reference at the top level; the reference never
imports it. Run its modules from the repository root, e.g. `python -m lab.grammar`."""
