"""Evaluation: benchmarks (``benchmarks``), ``runner.evaluate`` → results.json, acceptance metrics and
the results schema (``metrics``), PNG plots (``plots``)."""
