"""Base classes of the five kinds of component: dataset, selector, method, model, metric.

A component is a small class with a unique ``name``, a docstring whose first line is its
description, a nested pydantic ``Options`` model (unknown keys forbidden) and one method to
implement. Plugins register component *classes*; unlearnctl instantiates them with validated
options.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from .data import ImageSet
    from .models import DiffusionModel

Kind = Literal["dataset", "selector", "method", "model", "metric"]
KINDS: tuple[Kind, ...] = ("dataset", "selector", "method", "model", "metric")


class Options(BaseModel):
    """Base of every component's options: unknown keys are rejected, values validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class Component:
    """Base of every component. Subclasses set ``name`` and may override ``Options``."""

    kind: ClassVar[Kind]
    name: ClassVar[str]

    class Options(Options):
        pass

    def __init__(self, options: Options | None = None) -> None:
        self.options = options if options is not None else self.Options()

    @classmethod
    def description(cls) -> str:
        """The first line of the class docstring."""
        doc = inspect.getdoc(cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


class Dataset(Component):
    """Images with labels/metadata, a deterministic train/test split and stable ids."""

    kind = "dataset"

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
    #: True when the method needs a class-conditional model.
    conditional_only: ClassVar[bool] = False

    def unlearn(self, run: Any) -> None:
        """Unlearn ``run.forget`` from ``run.model`` (``run`` is a ``unlearnctl.runner.UnlearnRun``)."""
        raise NotImplementedError


class ModelPreset(Component):
    """A named model: resolves to diffusers weights, a scheduler, resolution and conditioning."""

    kind = "model"
    #: The dataset a model was trained on, used when ``--dataset`` is not given.
    default_dataset: ClassVar[str | None] = None

    def load(self) -> DiffusionModel:
        """Load the model on CPU in float32."""
        raise NotImplementedError


class Metric(Component):
    """A figure computed from a model (and its reference) by ``unlearnctl eval``."""

    kind = "metric"

    def compute(self, ctx: Any) -> dict[str, Any]:
        """Return named values (``ctx`` is a ``unlearnctl.evaluate.EvalContext``)."""
        raise NotImplementedError


BASE_FOR_KIND: dict[str, type[Component]] = {
    "dataset": Dataset,
    "selector": Selector,
    "method": Method,
    "model": ModelPreset,
    "metric": Metric,
}
