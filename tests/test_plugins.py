"""Plugin discovery through entry points, isolation of broken plugins, disabling, duplicates."""

from __future__ import annotations

import pytest

import unlearnctl.plugins as plugins_mod
from unlearnctl.plugins import BUILTIN_PLUGINS, build_plugin_manager, builtin_plugin_name
from unlearnctl.registry import build_registry


def _failure(registry_or_list, name):
    failures = getattr(registry_or_list, "failures", registry_or_list)
    matches = [f for f in failures if f.name == name]
    assert matches, f"no failure for {name!r} in {failures}"
    return matches[0]


def test_entry_point_plugin_is_discovered_with_provider_and_version(fake_plugins):
    module = fake_plugins.selectors("acme", "acme-half", version="2.3.4")
    registry = build_registry()
    info = registry.get("selector", "acme-half")
    assert (info.provider, info.provider_version) == ("acme", "2.3.4")
    assert info.description == "Fake selector acme-half for tests."
    plugin = next(p for p in registry.plugins if p.name == "acme")
    assert (plugin.version, plugin.module, plugin.builtin) == ("2.3.4", module, False)
    assert registry.provided_by("acme") == {"selector": ["acme-half"]}


def test_builtin_plugins_register_through_the_same_hooks(fake_plugins, monkeypatch):
    # A built-in plugin is just a module with hook implementations, registered under builtin.<name>.
    module = fake_plugins.add(
        "not-an-entry-point",
        '''
        import unlearnctl

        class Everything(unlearnctl.Selector):
            """Forget everything."""
            name = "everything"
            def select(self, data):
                return set(data.ids)

        @unlearnctl.hookimpl
        def register_selectors(register):
            register(Everything)
        ''',
    )
    # keep it off the entry-point path: only the built-in list names it
    (fake_plugins.site / "fake_not_an_entry_point-1.0.0.dist-info" / "entry_points.txt").write_text("")
    monkeypatch.setattr(plugins_mod, "BUILTIN_PLUGINS", (module,))
    registry = build_registry()
    name = builtin_plugin_name(module)
    assert name == "builtin." + module
    info = registry.get("selectors", "everything")
    assert info.provider == name
    assert [p.builtin for p in registry.plugins if p.name == name] == [True]


def test_every_builtin_module_is_loaded_or_reported():
    pm, plugins, failures = build_plugin_manager()
    names = {p.name for p in plugins} | {f.name for f in failures}
    assert {builtin_plugin_name(m) for m in BUILTIN_PLUGINS} <= names
    for p in plugins:
        assert pm.get_plugin(p.name) is not None


def test_builtin_plugins_load_and_register_without_failure():
    registry = build_registry()
    broken = [f for f in registry.failures if f.name.startswith("builtin.")]
    assert broken == []


def test_import_failure_keeps_the_traceback_and_the_line_in_the_plugin(fake_plugins):
    module = fake_plugins.add(
        "radius",
        """
        import json

        SETTINGS = json.loads("{}")
        RADIUS = SETTINGS["radius"]
        """,
    )
    failure = _failure(build_registry(), "radius")
    path = fake_plugins.site / f"{module}.py"
    assert (failure.stage, failure.error) == ("import", "KeyError: 'radius'")
    assert failure.location == f"{path}:5"
    assert failure.traceback is not None
    assert failure.traceback.startswith("Traceback (most recent call last):")
    assert f'File "{path}", line 5, in <module>' in failure.traceback
    assert failure.traceback.rstrip().endswith("KeyError: 'radius'")
    assert failure.summary() == f"plugin 'radius' failed to import: KeyError: 'radius' (at {path}:5)"


def test_location_is_the_innermost_frame_in_the_plugin_not_in_a_library(fake_plugins):
    module = fake_plugins.add("badjson", 'import json\n\nDATA = json.loads("{")\n')
    failure = _failure(build_registry(), "badjson")
    assert failure.error.startswith("JSONDecodeError:")
    assert failure.location == f"{fake_plugins.site / module}.py:3"
    assert "json/decoder.py" in failure.traceback  # the whole traceback is kept


def test_register_failures_keep_the_traceback_and_the_line_in_the_plugin(fake_plugins):
    module = fake_plugins.add(
        "raiser",
        """
        import unlearnctl


        @unlearnctl.hookimpl
        def register_metrics(register):
            raise RuntimeError("metric backend missing")
        """,
    )
    sloppy = fake_plugins.add(
        "sloppy",
        """
        import unlearnctl

        @unlearnctl.hookimpl
        def register_selectors(register):
            register(int)
        """,
    )
    typo = fake_plugins.add(
        "typo",
        """
        import unlearnctl

        @unlearnctl.hookimpl
        def register_method(register):
            pass
        """,
    )
    registry = build_registry()
    raiser = _failure(registry, "raiser")
    assert raiser.location == f"{fake_plugins.site / module}.py:7"
    assert "RuntimeError: metric backend missing" in raiser.traceback
    assert _failure(registry, "sloppy").location == f"{fake_plugins.site / sloppy}.py:6"
    assert _failure(registry, "typo").location == f"{fake_plugins.site / typo}.py:4"  # its decorator line


def test_import_error_is_reported_and_the_rest_keep_working(fake_plugins):
    fake_plugins.add("broken", "import does_not_exist_anywhere\n")
    fake_plugins.selectors("fine", "fine-one")
    registry = build_registry()
    failure = _failure(registry, "broken")
    assert failure.stage == "import"
    assert failure.error == "ModuleNotFoundError: No module named 'does_not_exist_anywhere'"
    assert registry.get("selector", "fine-one").provider == "fine"
    assert "broken" not in [p.name for p in registry.plugins]


def test_register_error_is_isolated_per_plugin(fake_plugins):
    fake_plugins.add(
        "half",
        '''
        import unlearnctl

        class Good(unlearnctl.Method):
            """Would be fine on its own."""
            name = "half-good"
            def unlearn(self, run):
                pass

        @unlearnctl.hookimpl
        def register_methods(register):
            register(Good)

        @unlearnctl.hookimpl
        def register_metrics(register):
            raise RuntimeError("metric backend missing")

        @unlearnctl.hookimpl
        def step_logged(run, step, values):
            raise AssertionError("a failed plugin must not receive lifecycle hooks")
        ''',
    )
    fake_plugins.selectors("fine", "fine-two")
    registry = build_registry()
    failure = _failure(registry, "half")
    assert (failure.stage, failure.error) == ("register", "RuntimeError: metric backend missing")
    # nothing of a failed plugin remains: not the components it registered before failing...
    assert "half-good" not in registry.names("methods")
    # ...nor its lifecycle hooks
    registry.hook.step_logged(run=object(), step=1, values={})
    assert "fine-two" in registry.names("selectors")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("register(int)", "not a subclass of unlearnctl.Selector"),
        ("register('classes')", "not a class"),
        ("register(NoName)", "has no valid `name`"),
        ("register(BadName)", "has no valid `name` (got 'bad:name')"),
        ("register(Dup); register(Dup)", "registers selector 'dup' twice"),
    ],
)
def test_registering_something_wrong_is_a_register_failure(fake_plugins, body, expected):
    fake_plugins.add(
        "sloppy",
        f'''
        import unlearnctl

        class NoName(unlearnctl.Selector):
            """No name."""

        class BadName(unlearnctl.Selector):
            """Bad name."""
            name = "bad:name"

        class Dup(unlearnctl.Selector):
            """Registered twice."""
            name = "dup"

        @unlearnctl.hookimpl
        def register_selectors(register):
            {body}
        ''',
    )
    failure = _failure(build_registry(), "sloppy")
    assert failure.stage == "register"
    assert expected in failure.error


def test_misspelt_hook_is_reported_with_a_suggestion(fake_plugins):
    fake_plugins.add(
        "typo",
        '''
        import unlearnctl

        class Fine(unlearnctl.Selector):
            """Fine."""
            name = "typo-fine"
            def select(self, data):
                return set()

        @unlearnctl.hookimpl
        def register_selectors(register):
            register(Fine)

        @unlearnctl.hookimpl
        def register_method(register):
            pass
        ''',
    )
    registry = build_registry()
    failure = _failure(registry, "typo")
    assert failure.stage == "register"
    assert "unknown hook 'register_method' (did you mean 'register_methods'?)" in failure.error
    assert "typo-fine" not in registry.names("selectors")
    registry.pm.check_pending()  # nothing pending is left behind


def test_hook_with_an_argument_the_spec_lacks_is_a_register_failure(fake_plugins):
    module = fake_plugins.add(
        "badargs",
        """
        import unlearnctl

        @unlearnctl.hookimpl
        def register_selectors(register, colour):
            pass
        """,
    )
    failure = _failure(build_registry(), "badargs")
    assert failure.stage == "register"
    assert failure.error.startswith("PluginValidationError:")
    assert "colour" in failure.error
    assert failure.location == f"{fake_plugins.site / module}.py:4"  # the offending hook implementation


def test_disable_variable_skips_plugins_by_name(fake_plugins, monkeypatch):
    fake_plugins.selectors("one", "one-sel")
    fake_plugins.selectors("two", "two-sel")
    fake_plugins.add("crashy", "raise SystemError('boom')\n")
    monkeypatch.setenv("UNLEARNCTL_DISABLE_PLUGINS", " one, crashy ,builtin.selectors")
    registry = build_registry()
    plugin_names = [p.name for p in registry.plugins]
    assert "one" not in plugin_names and "builtin.selectors" not in plugin_names
    assert "two" in plugin_names
    assert registry.names("selectors") == ["two-sel"]
    # a disabled plugin is not even imported, so its import error is not reported
    assert "crashy" not in [f.name for f in registry.failures]


def test_disable_argument_overrides_the_variable(fake_plugins, monkeypatch):
    fake_plugins.selectors("one", "one-sel")
    monkeypatch.setenv("UNLEARNCTL_DISABLE_PLUGINS", "one")
    assert "one-sel" in build_registry(disable=[]).names("selectors")
    assert "one-sel" not in build_registry(disable=["one"]).names("selectors")


def test_duplicate_name_refuses_only_the_later_component(fake_plugins):
    fake_plugins.selectors("alpha", "same-name")
    beta = fake_plugins.selectors("beta", "same-name", "beta-own")
    registry = build_registry()  # no exception: every command keeps working
    # the first registrant keeps the name; the rest of the second plugin still works
    assert registry.get("selector", "same-name").provider == "alpha"
    assert registry.get("selector", "beta-own").provider == "beta"
    assert "beta" in [p.name for p in registry.plugins]
    failure = _failure(registry, "beta")
    assert (failure.stage, failure.component, failure.kept_by) == ("component", ("selector", "same-name"), "alpha")
    assert "selector 'same-name'" in failure.error
    assert "plugin 'alpha' already provides a selector named 'same-name'" in failure.error
    assert f"({beta}.Selector0)" in failure.error
    assert "plugin 'beta' should rename its selector" in failure.error
    assert "UNLEARNCTL_DISABLE_PLUGINS=beta" in failure.error
    assert "uninstall" not in failure.error
    assert failure.location is not None and failure.location.startswith(str(fake_plugins.site / f"{beta}.py:"))
    assert failure.summary().startswith("plugin 'beta': selector 'same-name'")
    assert [f.name for f in registry.failures if f.name == "alpha"] == []


def test_plugin_reusing_a_builtin_name_is_refused_and_the_builtin_kept(fake_plugins):
    fake_plugins.selectors("acme", "classes", "acme-half")
    registry = build_registry()
    assert registry.get("selector", "classes").provider == "builtin.selectors"
    assert registry.get("selector", "acme-half").provider == "acme"
    failure = _failure(registry, "acme")
    assert failure.stage == "component" and failure.kept_by == "builtin.selectors"
    assert "built-in plugin 'builtin.selectors' already provides a selector named 'classes'" in failure.error
    assert "plugin 'acme' should rename its selector" in failure.error
    assert "UNLEARNCTL_DISABLE_PLUGINS=acme" in failure.error
    # never tell anyone to uninstall or disable a built-in
    assert "uninstall" not in failure.error and "builtin.selectors with" not in failure.error
    assert "=builtin." not in failure.error


def test_same_name_in_different_kinds_is_fine(fake_plugins):
    fake_plugins.selectors("alpha", "shared")
    fake_plugins.add(
        "beta",
        '''
        import unlearnctl

        class Shared(unlearnctl.Metric):
            """A metric that shares a selector's name."""
            name = "shared"
            def compute(self, ctx):
                return {}

        @unlearnctl.hookimpl
        def register_metrics(register):
            register(Shared)
        ''',
    )
    registry = build_registry()
    assert registry.get("selector", "shared").provider == "alpha"
    assert registry.get("metric", "shared").provider == "beta"


def test_lifecycle_hooks_reach_plugins(fake_plugins):
    module = fake_plugins.add(
        "tracker",
        """
        import unlearnctl

        CALLS = []

        @unlearnctl.hookimpl
        def run_started(run):
            CALLS.append(("started", run))

        @unlearnctl.hookimpl
        def step_logged(step, values):   # fewer arguments than the spec is allowed
            CALLS.append(("step", step, values["loss"]))
        """,
    )
    registry = build_registry()
    run = object()
    registry.hook.run_started(run=run)
    registry.hook.step_logged(run=run, step=3, values={"loss": 0.25})
    registry.hook.run_finished(run=run, result=None)
    import sys

    assert [("started", run), ("step", 3, 0.25)] == sys.modules[module].CALLS


def test_plugins_record_the_hooks_they_implement(fake_plugins):
    fake_plugins.add(
        "tracker",
        """
        import unlearnctl

        @unlearnctl.hookimpl
        def run_finished(run, result):
            pass

        @unlearnctl.hookimpl
        def step_logged(step, values):
            pass
        """,
    )
    registry = build_registry()
    tracker = registry.plugin("tracker")
    assert tracker is not None
    assert tracker.hooks == ["step_logged", "run_finished"]  # in the order of hookspecs.py
    assert registry.lifecycle_hooks("tracker") == ["step_logged", "run_finished"]
    selectors = registry.plugin("builtin.selectors")
    assert selectors is not None
    assert (selectors.hooks, selectors.lifecycle_hooks) == (["register_selectors"], [])
    assert registry.lifecycle_hooks("not-installed") == []
    assert plugins_mod.lifecycle_hook_names() == ["run_started", "step_logged", "run_finished"]


def test_the_loader_does_not_import_builtin_statically():
    # the contract "core never imports unlearnctl.builtin": the loader names the built-ins as strings
    import ast
    import inspect

    from unlearnctl import hookspecs, registry

    for module in (plugins_mod, registry, hookspecs):
        name = module.__name__
        tree = ast.parse(inspect.getsource(module))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = ("." * node.level) + (node.module or "")
                targets = [module + "." + a.name for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            assert not any(t.startswith((".builtin", "unlearnctl.builtin")) for t in targets), (name, targets)
    assert all(isinstance(m, str) and m.startswith("unlearnctl.builtin.") for m in BUILTIN_PLUGINS)


def test_docs_hook_reference_matches_the_hookspecs(repo_root):
    from unlearnctl import hookspecs
    from unlearnctl.plugins import HOOK_DOCS_END, HOOK_DOCS_START, hook_reference_markdown

    text = (repo_root / "docs" / "plugins.md").read_text(encoding="utf-8")
    section = text[text.index(HOOK_DOCS_START) + len(HOOK_DOCS_START) : text.index(HOOK_DOCS_END)]
    assert section.strip() == hook_reference_markdown().strip(), "run: python -m unlearnctl.plugins docs/plugins.md"
    for name in ("register_datasets", "register_methods", "step_logged", "run_finished"):
        assert f"### `{name}(" in section
        assert (
            getattr(hookspecs, name)
            .__doc__.strip()
            .splitlines()[0]
            .replace("``", "`")
            .replace(":class:`unlearnctl.", "`unlearnctl.")
            in section
        )


@pytest.mark.parametrize(
    ("kind", "name", "hint"),
    [
        ("method", "erasediff", "forget --method erasediff --set KEY=VALUE"),
        ("metric", "fidelity", "eval RUN --set fidelity.KEY=VALUE"),
        ("dataset", "digits", "--data-option KEY=VALUE"),
    ],
)
def test_show_says_how_to_set_the_options_of_each_kind(cli, kind: str, name: str, hint: str) -> None:
    result = cli("show", kind, name)
    assert result.exit_code == 0, result.output
    assert hint in " ".join(result.stdout.split())
