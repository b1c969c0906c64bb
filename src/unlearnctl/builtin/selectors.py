"""Built-in forget-set selectors, registered through the public ``register_selectors`` hook.

Each selector turns ``--forget NAME:ARGUMENT`` into a set of item ids. Impossible requests (a class
that does not exist, a field no item has, a selection that matches nothing) raise ``UsageError``
with a message that says how to fix them; ``unlearnctl.inputs.build_forget_ids`` also refuses a
union of selections that would leave nothing to remain.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from unlearnctl import Options, Selector, UsageError, hookimpl

if TYPE_CHECKING:
    from unlearnctl import ImageSet


def _split_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _require_some(selector: str, ids: set[str], data: ImageSet, what: str) -> set[str]:
    if not ids:
        raise UsageError(
            f"selector '{selector}': {what} matched no item of dataset '{data.name}' "
            "(the forget set would be empty): check the arguments"
        )
    return ids


def resolve_class(data: ImageSet, value: str | int) -> int:
    """A class name (``"cat"``, ``"3"``) or id (``3``) of ``data`` as a class id; ``UsageError`` if none."""
    names = data.class_names
    if not names:
        raise UsageError(f"dataset '{data.name}' has no classes: use another selector (where, indices, random)")
    text = str(value).strip()
    if text in names:
        return names.index(text)
    lowered = [n.lower() for n in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
        return int(text)
    shown = ", ".join(f"{i}={n}" if n != str(i) else n for i, n in enumerate(names[:20]))
    more = ", ..." if len(names) > 20 else ""
    raise UsageError(
        f"class '{text}' does not exist in dataset '{data.name}': give a class id 0..{len(names) - 1} "
        f"or a name ({shown}{more})"
    )


class Classes(Selector):
    """Forget every item of the given classes, by id or name (classes:2,5)."""

    name = "classes"

    class Options(Options):
        classes: list[str] = Field(description="class ids or names, e.g. 2,5 or cat,dog")

        @field_validator("classes", mode="before")
        @classmethod
        def _from_text(cls, value: Any) -> Any:
            if isinstance(value, str):
                return _split_list(value)
            if isinstance(value, int):
                return [str(value)]
            return [str(v) for v in value] if isinstance(value, list | tuple) else value

        @field_validator("classes")
        @classmethod
        def _not_empty(cls, value: list[str]) -> list[str]:
            if not value:
                raise ValueError("give at least one class")
            return value

    @classmethod
    def parse_argument(cls, argument: str) -> dict[str, Any]:
        if argument.strip().startswith("classes="):
            return super().parse_argument(argument)
        return {"classes": _split_list(argument)}

    def select(self, data: ImageSet) -> set[str]:
        wanted = {resolve_class(data, c) for c in self.options.classes}
        if len(wanted) >= len(data.class_names):
            raise UsageError(
                f"selector 'classes': forgetting all {len(data.class_names)} classes of dataset "
                f"'{data.name}' leaves nothing to remain: keep at least one class"
            )
        ids = {i for i, label in zip(data.ids, data.labels, strict=True) if label in wanted}
        return _require_some(self.name, ids, data, f"classes {sorted(wanted)}")


class Indices(Selector):
    """Forget the items listed in a text file, one id per line (indices:forget.txt).

    Blank lines and ``#`` comments are ignored. A line that is not an id of the dataset but a
    non-negative integer is read as a 0-based position in the dataset's split.
    """

    name = "indices"

    class Options(Options):
        file: Path = Field(description="text file with one item id (or 0-based position) per line")

    @classmethod
    def parse_argument(cls, argument: str) -> dict[str, Any]:
        if argument.strip().startswith("file="):
            return super().parse_argument(argument)
        return {"file": argument.strip()}

    def select(self, data: ImageSet) -> set[str]:
        path = Path(self.options.file).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"selector 'indices': file '{path}' does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"selector 'indices': cannot read '{path}': {exc}") from None
        known = data.ids
        known_set = set(known)
        ids: set[str] = set()
        bad: list[str] = []
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line in known_set:
                ids.add(line)
            elif line.isdigit() and int(line) < len(known):
                ids.add(known[int(line)])
            else:
                bad.append(line)
        if bad:
            example = ", ".join(bad[:3])
            raise UsageError(
                f"selector 'indices': {len(bad)} line(s) of '{path}' are neither ids of dataset '{data.name}' "
                f"nor positions 0..{len(known) - 1} (e.g. {example}): ids look like '{known[0] if known else ''}'"
            )
        return _require_some(self.name, ids, data, f"file '{path}'")


class Random(Selector):
    """Forget a seeded random fraction of the items (random:0.1 or random:fraction=0.1;seed=3)."""

    name = "random"

    class Options(Options):
        fraction: float = Field(gt=0, lt=1, description="fraction of the items to forget, strictly between 0 and 1")
        seed: int = Field(0, description="seed of the draw (same seed, same items)")

    @classmethod
    def parse_argument(cls, argument: str) -> dict[str, Any]:
        head, _, rest = argument.partition(";")
        if "=" in head:
            return super().parse_argument(argument)
        return {"fraction": head.strip(), **super().parse_argument(rest)}

    def select(self, data: ImageSet) -> set[str]:
        import torch

        ids = sorted(data.ids)  # independent of the dataset's item order
        count = round(self.options.fraction * len(ids))
        if count == 0:
            raise UsageError(
                f"selector 'random': {self.options.fraction} of {len(ids)} items rounds to 0 (the forget set "
                "would be empty): raise the fraction"
            )
        if count >= len(ids):
            raise UsageError(
                f"selector 'random': {self.options.fraction} of {len(ids)} items is every item: nothing would "
                "remain; lower the fraction"
            )
        perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(self.options.seed))
        return {ids[int(i)] for i in perm[:count]}


def _matches(meta_value: Any, wanted: str) -> bool:
    """Compare a metadata value with text from the command line (bools, numbers and strings)."""
    if meta_value is None:
        return False
    if isinstance(meta_value, bool):
        return wanted.strip().lower() in (("true", "1", "yes") if meta_value else ("false", "0", "no"))
    if isinstance(meta_value, int | float):
        try:
            return math.isclose(float(meta_value), float(wanted))
        except ValueError:
            return False
    return str(meta_value) == wanted


class Where(Selector):
    """Forget the items whose metadata field equals a value (where:race=2, or where:race=2,3 for several)."""

    name = "where"

    class Options(Options):
        field: str = Field(description="metadata field, e.g. label, race, gender")
        values: list[str] = Field(description="value(s) the field must equal (any of them)")

        @field_validator("values", mode="before")
        @classmethod
        def _from_text(cls, value: Any) -> Any:
            if isinstance(value, str):
                return _split_list(value)
            if isinstance(value, int | float | bool):
                return [str(value)]
            return [str(v) for v in value] if isinstance(value, list | tuple) else value

        @field_validator("values")
        @classmethod
        def _not_empty(cls, value: list[str]) -> list[str]:
            if not value:
                raise ValueError("give at least one value")
            return value

    @classmethod
    def parse_argument(cls, argument: str) -> dict[str, Any]:
        if argument.strip().startswith(("field=", "values=")):
            return super().parse_argument(argument)
        field, sep, value = argument.partition("=")
        if not sep or not field.strip():
            from unlearnctl import OptionError

            raise OptionError(
                f"selector 'where': cannot read '{argument}': write where:FIELD=VALUE, e.g. where:label=3"
            )
        return {"field": field.strip(), "values": value}

    def select(self, data: ImageSet) -> set[str]:
        field = self.options.field
        metadata = data.metadata
        if not any(field in m for m in metadata):
            fields = sorted({k for m in metadata for k in m})
            raise UsageError(
                f"selector 'where': no item of dataset '{data.name}' has metadata field '{field}': "
                f"fields are {', '.join(fields) or 'none'}"
            )
        ids = {
            item_id
            for item_id, m in zip(data.ids, metadata, strict=True)
            if any(_matches(m.get(field), v) for v in self.options.values)
        }
        if not ids:
            seen = sorted({str(m.get(field)) for m in metadata if field in m})
            shown = ", ".join(seen[:10]) + (", ..." if len(seen) > 10 else "")
            raise UsageError(
                f"selector 'where': no item has {field} in {self.options.values} (the forget set would be "
                f"empty): values seen are {shown}"
            )
        return ids


_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "-1", "false", "no"}


def attribute_is_set(value: Any) -> bool | None:
    """A boolean attribute in any usual encoding (bool, 0/1, -1/+1 as in CelebA, text); None if not one."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value > 0 if value in (-1, 0, 1) else None
    if isinstance(value, str):
        text = value.strip().lower()
        return True if text in _TRUE else False if text in _FALSE else None
    return None


class Attribute(Selector):
    """Forget the items with a boolean attribute set, CelebA style (attribute:Eyeglasses).

    The attribute is read from the item's metadata, top level or under ``"attributes"``; true, 1 and
    +1 mean set, false, 0 and -1 not set. ``attribute:Eyeglasses=false`` selects the items without it.
    """

    name = "attribute"

    class Options(Options):
        attribute: str = Field(description="attribute name, e.g. Eyeglasses")
        value: bool = Field(True, description="select items where the attribute is set (true) or not set (false)")

    @classmethod
    def parse_argument(cls, argument: str) -> dict[str, Any]:
        if argument.strip().startswith(("attribute=", "value=")):
            return super().parse_argument(argument)
        name, sep, value = argument.partition("=")
        return {"attribute": name.strip(), **({"value": value.strip()} if sep else {})}

    @staticmethod
    def _lookup(meta: dict[str, Any], attribute: str) -> Any:
        if attribute in meta:
            return meta[attribute]
        nested = meta.get("attributes")
        return nested.get(attribute) if isinstance(nested, dict) else None

    def select(self, data: ImageSet) -> set[str]:
        attribute = self.options.attribute
        values = [attribute_is_set(self._lookup(m, attribute)) for m in data.metadata]
        if all(v is None for v in values):
            names = set()
            for m in data.metadata[:1000]:
                flat = {**m, **(m.get("attributes") if isinstance(m.get("attributes"), dict) else {})}
                names |= {k for k, v in flat.items() if k != "label" and attribute_is_set(v) is not None}
            raise UsageError(
                f"selector 'attribute': dataset '{data.name}' has no boolean attribute '{attribute}': "
                f"attributes are {', '.join(sorted(names)) or 'none'}"
            )
        ids = {i for i, v in zip(data.ids, values, strict=True) if v is self.options.value}
        state = "set" if self.options.value else "not set"
        return _require_some(self.name, ids, data, f"attribute '{attribute}' {state}")


@hookimpl
def register_selectors(register) -> None:
    for selector in (Classes, Indices, Random, Where, Attribute):
        register(selector)
