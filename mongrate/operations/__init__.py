"""The ``op`` surface handed to revision authors, and what runs it.

The runner (and the testing kit) use these names only:

- :class:`OperationsRun`: the operations side of one upgrade or downgrade; ``run.op(rev)``
  is the ``op`` of one revision call;
- :class:`Operations`: the type of ``op`` (also exported as ``mongrate.Operations``);
- :func:`reported`: the counts an ``op`` reported, in order;
- :class:`DeferredStepFailed`: a deferred change failed inside a later pass (names whose);
- :class:`Strategy`, :func:`choose`: how a run's helpers write, decided once per run.
"""

from mongrate.operations.ops import Operations, reported
from mongrate.operations.run import OperationsRun
from mongrate.operations.step import DeferredStepFailed
from mongrate.operations.strategy import Strategy, choose

__all__ = ["DeferredStepFailed", "Operations", "OperationsRun", "Strategy", "choose", "reported"]
