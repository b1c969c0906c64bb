"""``unlearnctl plugins``, ``unlearnctl list KIND`` and ``unlearnctl show KIND NAME``."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..kinds import KINDS
from ..plugins import DISABLE_ENV, PluginFailure, disabled_plugin_names
from .common import DEBUG_ENV, console, debug_enabled, err_console, handle_errors, load_registry, print_json
from .options import JsonFlag

if TYPE_CHECKING:
    from ..registry import ComponentInfo

KIND_HELP = "One of: " + ", ".join(f"{k}s" for k in KINDS) + " (singular accepted)."


# --- completion (must stay quiet: no warnings, no errors) ----------------------------------------


def complete_kind(incomplete: str) -> list[str]:
    return [f"{k}s" for k in KINDS if f"{k}s".startswith(incomplete.lower())]


def complete_name(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    from ..registry import get_registry

    try:
        infos = get_registry().all(str(ctx.params.get("kind") or ""))
    except Exception:
        return []
    return [(i.name, i.description) for i in infos if i.name.startswith(incomplete)]


KindArg = Annotated[
    str, typer.Argument(help=KIND_HELP, metavar="KIND", autocompletion=complete_kind, show_default=False)
]
NameArg = Annotated[
    str,
    typer.Argument(help="Component name (see `unlearnctl list KIND`).", metavar="NAME", autocompletion=complete_name),
]


# --- rendering helpers --------------------------------------------------------------------------


def _provider(info: ComponentInfo) -> str:
    return f"{info.provider} {info.provider_version}" if info.provider_version else info.provider


def _default_text(row: dict[str, Any]) -> str:
    if row["required"]:
        return "required"
    value = row["default"]
    return repr(value) if isinstance(value, str) else str(value)


def _doc_body(cls: type) -> str:
    """The class docstring after its first line (the description)."""
    lines = (inspect.getdoc(cls) or "").strip().splitlines()
    return "\n".join(lines[1:]).strip()


def component_summary(info: ComponentInfo) -> dict[str, Any]:
    return {
        "kind": info.kind,
        "name": info.name,
        "description": info.description,
        "provider": info.provider,
        "provider_version": info.provider_version,
    }


def component_details(info: ComponentInfo) -> dict[str, Any]:
    from ..components import Attack, Method, Metric, ModelPreset  # pydantic: not for --help (docs/performance.md)
    from ..config import options_table

    details = component_summary(info)
    details["doc"] = _doc_body(info.cls)
    cls = info.cls
    if issubclass(cls, Method):
        details["conditional_only"] = cls.conditional_only
    if issubclass(cls, ModelPreset):
        details["default_dataset"] = cls.default_dataset
    if issubclass(cls, Metric):
        details["default"] = cls.default
    if issubclass(cls, Attack):
        details["default"] = cls.default
        details["conditional_only"] = cls.conditional_only
        details["needs_judge"] = cls.needs_judge
    details["options"] = options_table(info.cls)
    return details


# --- commands -----------------------------------------------------------------------------------


def failure_data(failure: PluginFailure) -> dict[str, Any]:
    """A failed plugin or refused component for ``--json``: the full message, location and traceback."""
    return {
        "name": failure.name,
        "stage": failure.stage,
        "error": failure.error,
        "location": failure.location,
        "traceback": failure.traceback,
        "component": (
            {"kind": failure.component[0], "name": failure.component[1]} if failure.component is not None else None
        ),
        "kept_by": failure.kept_by,
    }


@handle_errors
def plugins(json_output: JsonFlag = False) -> None:
    """Installed plugins: name, version, what each provides, the hooks each listens to, and what failed."""
    registry = load_registry(warn=False)
    disabled = disabled_plugin_names()
    data = {
        "plugins": [
            {
                "name": p.name,
                "version": p.version,
                "distribution": p.distribution,
                "module": p.module,
                "builtin": p.builtin,
                "provides": {f"{k}s": v for k, v in registry.provided_by(p.name).items()},
                "hooks": p.lifecycle_hooks,
            }
            for p in registry.plugins
        ],
        "failures": [failure_data(f) for f in registry.failures],
        "disabled": disabled,
    }
    if json_output:
        print_json(data)
        return
    # Every column wraps (long words fold): nothing is ever cut off with "...".
    table = Table(title="Plugins", title_justify="left")
    table.add_column("Plugin", style="bold", overflow="fold")
    table.add_column("Version", overflow="fold")
    table.add_column("Source", overflow="fold")
    table.add_column("Provides", overflow="fold")
    table.add_column("Hooks", overflow="fold")
    for p in data["plugins"]:
        provides = "\n".join(f"{kind}: {', '.join(names)}" for kind, names in p["provides"].items()) or "-"
        source = "built-in" if p["builtin"] else p["module"]
        hooks = ", ".join(p["hooks"]) or "-"
        table.add_row(escape(p["name"]), p["version"] or "-", escape(source), escape(provides), escape(hooks))
    console.print(table)
    if disabled:
        console.print(f"Disabled by {DISABLE_ENV}: {escape(', '.join(disabled))}")
    failed = [f for f in registry.failures if f.stage != "component"]
    if failed:
        table = Table(title="Failed plugins", title_justify="left", title_style="bold red", style="red")
        table.add_column("Plugin", style="bold red", overflow="fold")
        table.add_column("Stage", style="red", overflow="fold")
        table.add_column("Error", style="red", overflow="fold")
        for f in failed:
            error = f.error + (f"\nat {f.location}" if f.location else "")
            table.add_row(escape(f.name), f.stage, escape(error))
        console.print(table)
    refused = [f for f in registry.failures if f.stage == "component"]
    if refused:
        table = Table(title="Refused components", title_justify="left", title_style="bold yellow", style="yellow")
        table.add_column("Plugin", style="bold yellow", overflow="fold")
        table.add_column("Component", overflow="fold")
        table.add_column("Kept by", overflow="fold")
        table.add_column("Why", overflow="fold")
        for f in refused:
            kind, name = f.component or ("?", "?")
            why = f.error + (f"\nat {f.location}" if f.location else "")
            table.add_row(escape(f.name), escape(f"{kind} {name}"), escape(f.kept_by or "?"), escape(why))
        console.print(table)
    if debug_enabled():
        for f in registry.failures:
            if f.traceback:
                err_console.print(f"traceback of plugin '{f.name}' ({f.stage}):", markup=False, soft_wrap=True)
                err_console.print(f.traceback.rstrip(), markup=False, highlight=False, soft_wrap=True)
    elif any(f.traceback for f in registry.failures):
        console.print(f"{DEBUG_ENV}=1 shows the traceback of each failure.", style="dim")


@handle_errors
def list_components(kind: KindArg, json_output: JsonFlag = False) -> None:
    """Components of one kind: name, description, provider."""
    from ..registry import normalize_kind

    k = normalize_kind(kind)
    registry = load_registry()
    infos = registry.all(k)
    if json_output:
        print_json([component_summary(i) for i in infos])
        return
    if not infos:
        console.print(f"No {k}s installed.")
        return
    table = Table(title=f"{k.capitalize()}s", title_justify="left")
    table.add_column("Name", style="bold", no_wrap=True)
    table.add_column("Description", overflow="fold")
    table.add_column("Provider", no_wrap=True)
    for i in infos:
        table.add_row(escape(i.name), escape(i.description), escape(_provider(i)))
    console.print(table)


@handle_errors
def show(kind: KindArg, name: NameArg, json_output: JsonFlag = False) -> None:
    """One component: description, provider and its options (type, default, help)."""
    from ..registry import normalize_kind

    k = normalize_kind(kind)
    info = load_registry().get(k, name)
    details = component_details(info)
    if json_output:
        print_json(details)
        return
    console.print(f"[bold]{k} {escape(info.name)}[/] — {escape(details['description'] or '(no description)')}")
    where = f"{info.cls.__module__}.{info.cls.__qualname__}"
    console.print(f"provider: {escape(_provider(info))}  ({escape(where)})")
    if details.get("conditional_only"):
        console.print("needs a class-conditional model")
    if details.get("needs_judge"):
        console.print("needs a judge classifier (--judge, or the one the model names)")
    if details["doc"]:
        console.print()
        console.print(escape(details["doc"]))
    console.print()
    if not details["options"]:
        console.print("No options.")
        return
    table = Table(title="Options", title_justify="left")
    table.add_column("Option", style="bold", no_wrap=True)
    table.add_column("Type")
    table.add_column("Default")
    table.add_column("Help")
    for row in details["options"]:
        table.add_row(escape(row["name"]), escape(row["type"]), escape(_default_text(row)), escape(row["help"]))
    console.print(table)
    console.print(_how_to_set(k, info.name), style="dim")


#: how each kind's options are set on the command line
_SET_HINTS = {
    "method": "unlearnctl forget --method {name} --set KEY=VALUE (or --config FILE: TOML, YAML or JSON)",
    "metric": "unlearnctl eval RUN --set {name}.KEY=VALUE",
    "attack": "unlearnctl audit RUN --set {name}.KEY=VALUE (or --config FILE with a [{name}] table)",
    "dataset": "--data-option KEY=VALUE on forget, eval, train and train-judge",
    "selector": "unlearnctl forget --forget {name}:ARGS (the selector reads its options from ARGS)",
    "model": "the Python API (a hub model's revision: --model owner/name@REVISION)",
    "executor": "unlearnctl sweep SPEC --executor {name} --executor-option KEY=VALUE (or the spec's executor table: "
    'name = "{name}", options = {{...}})',
}


def _how_to_set(kind: str, name: str) -> str:
    hint = _SET_HINTS.get(kind)
    return f"Set them with: {hint.format(name=name)}" if hint else "Set them through the Python API."


def register(app: typer.Typer) -> None:
    """Add ``plugins``, ``list`` and ``show`` to the ``unlearnctl`` app."""
    app.command("plugins")(plugins)
    app.command("list")(list_components)
    app.command("show")(show)
