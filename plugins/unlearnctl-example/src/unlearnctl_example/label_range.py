"""The ``label-range`` selector: forget every item whose class id is in ``lo..hi``."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

import unlearnctl


class LabelRange(unlearnctl.Selector):
    """Forget the classes lo..hi (inclusive), e.g. --forget label-range:3-5.

    The argument after ``label-range:`` is ``LO-HI`` or a single class id ``N`` (same as ``N-N``);
    ``lo=3;hi=5`` works too. Class ids are those of the dataset (see ``unlearnctl show dataset NAME``).
    """

    name = "label-range"

    class Options(unlearnctl.Options):
        lo: int = Field(ge=0, description="first class id to forget")
        hi: int = Field(ge=0, description="last class id to forget (inclusive)")

        @model_validator(mode="after")
        def _ordered(self) -> LabelRange.Options:
            if self.hi < self.lo:
                raise ValueError(f"hi ({self.hi}) must be >= lo ({self.lo}): write LO-HI, e.g. 3-5")
            return self

    @classmethod
    def parse_argument(cls, argument: str) -> dict[str, Any]:
        text = argument.strip()
        if "=" in text:  # the generic form: lo=3;hi=5
            return super().parse_argument(text)
        lo, sep, hi = text.partition("-")
        if not lo.strip().isdigit() or (sep and not hi.strip().isdigit()):
            raise unlearnctl.OptionError(
                f"selector 'label-range': cannot read '{argument}': write LO-HI with class ids, e.g. label-range:3-5"
            )
        return {"lo": int(lo), "hi": int(hi) if sep else int(lo)}

    def select(self, data: unlearnctl.ImageSet) -> set[str]:
        lo, hi = self.options.lo, self.options.hi
        if data.num_classes == 0:
            raise unlearnctl.UsageError(
                f"selector 'label-range': dataset '{data.name}' has no classes: use a labelled dataset"
            )
        if hi >= data.num_classes:
            raise unlearnctl.UsageError(
                f"selector 'label-range': class {hi} does not exist in dataset '{data.name}' "
                f"(class ids 0..{data.num_classes - 1})"
            )
        return {item_id for item_id, label in zip(data.ids, data.labels, strict=True) if lo <= label <= hi}
