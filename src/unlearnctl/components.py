"""Base classes of the seven kinds of component: dataset, selector, method, model, metric, attack, executor.

A component is a small class with a unique ``name``, a docstring whose first line is its
description, a nested pydantic ``Options`` model (unknown keys forbidden) and one method to
implement. Plugins register component *classes*; unlearnctl instantiates them with validated
options.

Every other hook a component may implement is declared here, on its base class, with a docstring and
a default that does nothing (or reads the obvious option): unlearnctl calls them directly, never by
looking a name up. The guide for plugin authors is ``docs/plugins.md``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

# re-exported: defined apart so that the CLI names the kinds without pydantic
from .kinds import KINDS as KINDS
from .kinds import Kind as Kind

if TYPE_CHECKING:
    # contexts import this module: their types are for annotations only
    from concurrent.futures import Future

    from .cells import CellOutcome, CellTask
    from .contexts.audit import AuditContext
    from .contexts.evaluation import EvalContext
    from .contexts.unlearn import UnlearnRun
    from .data.sets import ForgetSplit, ImageSet
    from .models.folder import DiffusionModel


class Options(BaseModel):
    """Base of every component's options: unknown keys are rejected, values validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


# inside ``Component`` the name ``Options`` is its nested class: annotations there name the base by this
_BaseOptions = Options


class Component:
    """Base of every component. Subclasses set ``name`` and may override ``Options``."""

    kind: ClassVar[Kind]
    name: ClassVar[str]

    class Options(Options):
        pass

    def __init__(self, options: _BaseOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()

    @classmethod
    def description(cls) -> str:
        """The first line of the class docstring."""
        doc = inspect.getdoc(cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


class Dataset(Component):
    """Images with labels/metadata, a deterministic train/test split and stable ids."""

    kind = "dataset"
    #: the data's version, recorded in manifests (``DatasetRecord.version``) when the loaded
    #: ``ImageSet`` does not carry one; bump it when the data or the split changes
    version: ClassVar[str] = ""

    def load(self, split: Literal["train", "test"] = "train", data_dir: Path | None = None) -> ImageSet:
        """Return the images of ``split`` (``data_dir`` overrides the dataset's default folder)."""
        raise NotImplementedError


class Selector(Component):
    """Chooses the forget set from a dataset; the rest is the remaining set."""

    kind = "selector"

    @classmethod
    def parse_argument(cls, argument: str) -> dict[str, Any]:
        """Turn the text after ``NAME:`` in ``--forget NAME:ARGUMENT`` into option values.

        The default accepts ``key=value`` pairs separated by ``;``. Selectors override this for a
        shorthand (``classes:2,5``, ``random:0.1``).
        """
        values: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in argument.split(";"))):
            key, sep, value = part.partition("=")
            if not sep:
                from .errors import OptionError

                raise OptionError(
                    f"selector '{cls.name}': cannot read '{part}': write key=value "
                    f"(see `unlearnctl show selector {cls.name}`)"
                )
            values[key.strip()] = value.strip()
        return values

    def select(self, data: ImageSet) -> set[str]:
        """Return the ids of the items to forget. Raise ``UsageError`` for an impossible request."""
        raise NotImplementedError


class Method(Component):
    """An unlearning method: changes ``run.model`` in place using the shared runner."""

    kind = "method"
    #: True when the method needs a class-conditional model (``forget`` refuses an unconditional one).
    conditional_only: ClassVar[bool] = False

    def check(self, model: DiffusionModel, split: ForgetSplit) -> None:
        """Optional: refuse a model or forget set the method cannot work with, before any work.

        ``forget`` and ``replay`` call it after loading the model and splitting the data, before the run
        folder is created; raise ``UsageError``/``OptionError`` with a one-line message. It may also
        resolve ``"auto"`` option values from the model (``self.options.x = ...``): the manifest records
        the options as they are after this call. The default accepts everything.
        """

    def total_steps(self) -> int | None:
        """The number of outer steps the run will take: ``run.total_steps`` and the progress bar's total.

        The default reads the ``steps`` option (the one ``--steps`` sets), or None when the method has
        none. Override it when the step count comes from elsewhere.
        """
        steps = getattr(self.options, "steps", None)
        return steps if isinstance(steps, int) else None

    def unlearn(self, run: UnlearnRun) -> None:
        """Unlearn ``run.split.forget`` from ``run.model``, in place, using the runner ``run``.

        ``run`` (an :class:`unlearnctl.UnlearnRun`) gives the data streams, seeded draws, the optimizer,
        EMA, logging and ``run.extra`` (values for the manifest's ``extra``).
        """
        raise NotImplementedError


class ModelPreset(Component):
    """A named model: resolves to diffusers weights, a scheduler, resolution and conditioning."""

    kind = "model"
    #: The dataset a model was trained on, used when ``--dataset`` is not given.
    default_dataset: ClassVar[str | None] = None

    def load(self) -> DiffusionModel:
        """Load the model on CPU in float32."""
        raise NotImplementedError


SampleGroup = Literal["forget", "kept"]


class Metric(Component):
    """A figure computed from a model (and its reference) by ``unlearnctl eval``."""

    kind = "metric"
    #: True: ``eval`` computes it when ``--metrics`` is not given (in registration order, built-ins first)
    default: ClassVar[bool] = False
    #: the groups of classes whose evaluation samples ``compute`` reads (``ctx.samples(c)``): ``"forget"``,
    #: ``"kept"``, both (the default) or none (``()``). A declaration (checked by the contract tests): what
    #: ``eval`` samples does not follow it, so a metric's value does not depend on the other metrics.
    needs_samples: ClassVar[tuple[SampleGroup, ...]] = ("forget", "kept")

    def prepare(self, ctx: EvalContext) -> None:
        """Optional: check settings and build expensive pieces before any sampling (fail early).

        ``eval`` calls it once, with the evaluated model's context, before any model is sampled; raise
        ``UsageError`` for a request the metric cannot serve (say, no judge). Keep what you build in
        ``ctx.cache`` (shared by the model's and the reference's contexts). The default does nothing.
        """

    def compute(self, ctx: EvalContext) -> dict[str, Any]:
        """Return named values for ``metrics.json``, for the one model of ``ctx``.

        Called once for the evaluated model and once for its reference, each with its own
        :class:`unlearnctl.EvalContext` (same protocol, judge, data and cache). Values: numbers, strings,
        bools, lists and dicts of them (``{"skipped": reason}`` when the metric does not apply).
        """
        raise NotImplementedError


class Attack(Component):
    """An adversary's attack on a model, run by ``unlearnctl audit``: can the forgotten data be recovered?

    ``audit`` runs every attack on the unlearned model, its base model and (``--against``) a retrained
    reference, each with its own :class:`unlearnctl.AuditContext` and the same seeds, so that a result is
    read against the same attack on the model that never saw the data.
    """

    kind = "attack"
    #: True: ``audit`` runs it when ``--attacks`` is not given (in registration order, built-ins first); a
    #: default attack that does not apply (``conditional_only`` on an unconditional model, ``needs_judge``
    #: without a judge, ``needs_forgotten_class`` without a forgotten class) is left out with a note, where
    #: naming it in ``--attacks`` is an error
    default: ClassVar[bool] = False
    #: True when the attack needs a class-conditional model (``audit`` refuses an unconditional one before
    #: any work when the attack is named in ``--attacks``)
    conditional_only: ClassVar[bool] = False
    #: True when the attack reads the judge classifier (``ctx.require_judge``): ``audit`` refuses to start
    #: without one when the attack is named in ``--attacks``
    needs_judge: ClassVar[bool] = False
    #: True when the attack reads what the model draws of a forgotten class: it needs a forget set that
    #: forgets whole classes (``--classes 2``), not a scattered one (``--forget random:0.2``)
    needs_forgotten_class: ClassVar[bool] = False
    #: ``(result key, column title)``: the number of the unlearned model's result that ``compare`` shows
    #: next to the eval columns (e.g. ``("auc", "MIA loss")``); None: the attack has no column
    headline: ClassVar[tuple[str, str] | None] = None

    def prepare(self, ctx: AuditContext) -> None:
        """Optional: check settings and build expensive pieces before any attack runs (fail early).

        ``audit`` calls it once, with the unlearned model's context, before the first attack runs on any
        model; raise ``UsageError`` for a request the attack cannot serve (too few forget images for an
        option, a model it cannot handle). Keep what you build in ``ctx.cache`` (shared by every role's
        context). The default does nothing.
        """

    def run(self, ctx: AuditContext) -> dict[str, Any]:
        """Attack the one model of ``ctx`` and return named results for ``audit.json``.

        Called once per audited model (``ctx.role``: ``"model"``, ``"base"``, ``"retrain"``), each time
        with its own :class:`unlearnctl.AuditContext` (same seeds, data, judge and cache): draw every
        random number from ``ctx.generator(stream)`` so that every role faces the same attack. Never change
        ``ctx.model`` in place (fine-tune a copy). Values: numbers, strings, bools, lists and dicts of them
        (``{"skipped": reason}`` when the attack does not apply). Two keys are drawn by ``audit``:
        ``roc`` (``{"fpr": [...], "tpr": [...]}``: a ROC curve) and ``curves`` (``{series: {"x": [...],
        "y": [...]}}``, with ``curve_axes`` ``{"x": label, "y": label}``).
        """
        raise NotImplementedError


class Executor(Component):
    """Runs the cells of a study for ``unlearnctl sweep`` (``--executor NAME``): where, not what.

    A cell is a :class:`unlearnctl.CellTask` (a few ``unlearnctl`` commands and the folder they run in);
    an executor runs it somewhere with :func:`unlearnctl.run_cell` and hands back its
    :class:`unlearnctl.CellOutcome` through a :class:`concurrent.futures.Future`. ``sweep`` decides what
    runs and when (it never has more than ``jobs`` cells submitted at once), records every outcome in the
    study's index and resumes what was cut short; the executor only runs what it is given.

    The cells write into the study folder, so every machine that runs one must see that folder at the same
    path (one machine, or a shared file system).
    """

    kind = "executor"

    def start(self, jobs: int | None) -> int:
        """Get ready to run cells; return how many ``sweep`` may keep submitted at once.

        ``jobs``: ``--jobs`` (None: not given; choose from what the executor has, e.g. one per machine
        or per cluster CPU). Called once, before the first :meth:`submit`.
        """
        raise NotImplementedError

    def threads_per_cell(self, jobs: int) -> int | None:
        """CPU threads each cell's commands get (``CellTask.threads``) when ``jobs`` run at once; None:
        leave it to the machine that runs it. The default: None."""
        return None

    def submit(self, task: CellTask) -> Future[CellOutcome]:
        """Start ``task`` (with :func:`unlearnctl.run_cell` wherever it runs) and return its future."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every running cell as ``run_cell``'s ``cancel`` does (SIGTERM: a ``forget`` checkpoints) and
        drop the ones not started; return when they have ended. Their futures then hold cancelled outcomes
        (or are cancelled). Called on Ctrl-C or SIGTERM of ``sweep``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what :meth:`start` took (threads, a cluster connection). Called once, last."""


BASE_FOR_KIND: dict[str, type[Component]] = {
    "dataset": Dataset,
    "selector": Selector,
    "method": Method,
    "model": ModelPreset,
    "metric": Metric,
    "attack": Attack,
    "executor": Executor,
}
