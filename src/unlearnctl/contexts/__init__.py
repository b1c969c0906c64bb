"""What the core hands to plugin components while they run.

- :mod:`.unlearn`: :class:`~unlearnctl.contexts.unlearn.UnlearnRun`, what a method's ``unlearn(run)`` receives.
- :mod:`.study`: :class:`~unlearnctl.contexts.study.ModelContext`, the per-model context the next two build on,
  with the sampling protocol every model of an ``eval`` or ``audit`` shares.
- :mod:`.evaluation`: :class:`~unlearnctl.contexts.evaluation.EvalContext`, what a metric's ``compute(ctx)``
  receives.
- :mod:`.audit`: :class:`~unlearnctl.contexts.audit.AuditContext`, what an attack's ``run(ctx)`` receives.
"""
