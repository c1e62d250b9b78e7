"""The analysis kinds, one module each (request, run, decode, report, rows, check, cost model).

Every module here whose name does not start with ``_`` is imported by
``engine.analysis.registry.discover`` and registers its request class with ``@register``; modules
starting with ``_`` hold pieces several kinds share (``_attacklab``: the Attack Lab's attack
choice and model loading). Kind modules import no torch at module level.
"""
