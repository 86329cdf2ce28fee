"""dubsim benchmarks: one module per benchmark, `python -m bench` runs them all.

Every benchmark starts the real server (`python -m service`) on a free loopback port, drives it
from separate processes where the load would otherwise share the measuring loop, writes
`bench/results/<name>.json` and a PNG next to it, and stops everything it started.
"""
