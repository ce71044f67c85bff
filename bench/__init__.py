"""Benchmarks: each prints a table of ratios against a baseline measured in the
same run. Run from the repository root as modules (`python -m bench.engine`,
or `make bench`), so that they import scripts.xmppserver by name."""
