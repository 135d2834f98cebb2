"""Benchmark tooling: many simulated Twilio callers in one process, and the numbers they yield.

``app.bench.caller`` drives hundreds of calls from one shared 20 ms clock; ``app.bench.stats``
turns their timings into the figures ``scripts/bench.py`` reports.
"""
