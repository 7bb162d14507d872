"""Performance benchmarks: each claim is a ratio measured in one process (against a plain baseline).

A benchmark is a module in this folder with ``run(quick: bool = False, ...) -> dict`` returning
``name``, ``claim`` (one sentence), ``model``, ``threads``, ``rows`` (list of flat dicts: the
measurements) and ``passed`` (bool). ``python -m benchmarks`` runs every such module and writes
``benchmarks/README.md``; add a module and it is picked up, nothing to register.
"""
