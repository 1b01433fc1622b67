"""Tools for developers, tests and benchmarks that are no part of the running service.

`workload.generate` makes a deterministic, realistic stream of CloudEvents (benchmarks, chaos and
concurrency tests, `onevoice replay` files). It lives here, not under `bench/`, so that tests do not
depend on the benchmark scripts.
"""
