"""What the core hands to plugin components while they run.

- :mod:`.unlearn`: :class:`~unlearnctl.contexts.unlearn.UnlearnRun`, what a method's ``unlearn(run)`` receives.
- :mod:`.evaluation`: :class:`~unlearnctl.contexts.evaluation.EvalContext`, what a metric's ``compute(ctx)``
  receives, with the shared sampling protocol.
"""
