"""The benchmark suite of issue 5: ingest, pipeline vs raw dramatiq, scheduler at scale.

Run ``python -m benchmarks.run --size tiny|small|full``; see ``benchmarks/README.md``.
Everything runs on this machine: a Redis started for the run, a SendGrid stand-in in
its own process, and the real ``nurture`` commands as subprocesses.
"""
