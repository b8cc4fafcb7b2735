"""Benchmark of the node against a bare `websockets` server: `python -m bench.run` (`make bench`).

Results go to docs/performance.md (full run) and bench/results/ (raw JSON, logs of the children).
"""
