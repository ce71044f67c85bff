"""The project's own tools: private servers for tests, benchmarks and the demo
(xmppserver, pgserver), the demo, the fuzz driver, the crash-report summary.

A package so that tests, bench/ and the demo import the server helpers by name
(`from scripts import xmppserver`) with the repository root on sys.path:
pytest's `pythonpath`, or `python -m scripts.demo` / `python -m bench.xmpp`
from the root, as the Makefile runs them. xmppserver and pgserver still run
as plain scripts too (`python scripts/xmppserver.py start ...`).
"""
