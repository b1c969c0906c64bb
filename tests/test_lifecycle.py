"""The lifecycle channel: RunInfo, and Lifecycle calling each plugin's hook on its own."""

from __future__ import annotations

import sys
import warnings

import pytest

import unlearnctl
from unlearnctl.lifecycle import LIFECYCLE_HOOKS, Lifecycle, PluginHookWarning, RunInfo
from unlearnctl.registry import build_registry
from unlearnctl.rundir import LOG_FILE
from unlearnctl.testing.tiny import tiny_image_set, tiny_model

RECORDER = """
import unlearnctl
CALLS = []

@unlearnctl.hookimpl
def run_started(run):
    CALLS.append(("started", run.kind))

@unlearnctl.hookimpl
def step_logged(step, values):   # fewer arguments than the spec
    CALLS.append(("step", step, values["loss"]))

@unlearnctl.hookimpl
def run_finished(run, result):
    CALLS.append(("finished", result))
"""

FAILING = """
import unlearnctl
CALLS = []

@unlearnctl.hookimpl
def step_logged(run, step, values):
    CALLS.append(step)
    raise KeyError("lost")

@unlearnctl.hookimpl
def run_finished(run, result):
    raise RuntimeError("upload failed")
"""


def _calls(module: str) -> list:
    return sys.modules[module].CALLS


def _split() -> unlearnctl.ForgetSplit:
    data = tiny_image_set(n_per_class=2)
    return unlearnctl.split_forget(data, {data.ids[0]})


def test_runinfo_is_public_and_unlearnrun_is_one():
    assert {"RunInfo", "PluginHookWarning"} <= set(unlearnctl.__all__)
    assert unlearnctl.RunInfo is RunInfo
    run = unlearnctl.UnlearnRun(tiny_model(), _split())
    assert isinstance(run, RunInfo)
    for name in ("kind", "out_dir", "work_dir", "config", "total_steps", "description", "seed", "extra"):
        assert hasattr(run, name), name
    assert run.kind == "forget"
    # compared and hashed by identity: one object per run, usable as a key by listeners
    other = RunInfo(kind="train")
    assert other != RunInfo(kind="train") and {other: 1}[other] == 1


def test_unlearnrun_writes_its_log_in_work_dir(tmp_path):
    final, work = tmp_path / "run", tmp_path / ".run.partial-x"
    work.mkdir()
    run = unlearnctl.UnlearnRun(tiny_model(), _split(), out_dir=final, work_dir=work)
    run.log(1, {"loss": 0.5})
    assert (work / LOG_FILE).read_text().count("\n") == 1
    assert not final.exists() and run.out_dir == final


def test_lifecycle_calls_every_plugin_with_the_arguments_it_takes(fake_plugins):
    module = fake_plugins.add("recorder", RECORDER)
    hooks = Lifecycle.of(build_registry())
    run = RunInfo(kind="eval")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when every listener works
        hooks.run_started(run=run)
        hooks.step_logged(run=run, step=1, values={"loss": 0.5})
        hooks.run_finished(run=run, result="done")
    assert _calls(module) == [("started", "eval"), ("step", 1, 0.5), ("finished", "done")]


def test_a_failing_listener_is_reported_once_per_hook_and_isolated(fake_plugins):
    failing = fake_plugins.add("flaky", FAILING)
    recorder = fake_plugins.add("recorder", RECORDER)
    hooks = Lifecycle.of(build_registry())
    run = RunInfo(kind="train")
    with pytest.warns(PluginHookWarning) as caught:
        hooks.run_started(run=run)
        for step in (1, 2, 3):
            hooks.step_logged(run=run, step=step, values={"loss": 1.0 / step})
        hooks.run_finished(run=run, result=None)
    # the other plugin got everything; the failing one was still called at every step
    assert [c[0] for c in _calls(recorder)] == ["started", "step", "step", "step", "finished"]
    assert _calls(failing) == [1, 2, 3]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    step_msg, finished_msg = messages
    assert step_msg.startswith("plugin 'flaky' failed in step_logged: KeyError: 'lost' (at ")
    assert f"{fake_plugins.site / failing}.py:" in step_msg  # the line in the plugin's own code
    assert finished_msg.startswith("plugin 'flaky' failed in run_finished: RuntimeError: upload failed")
    warning = caught[0].message
    assert (warning.plugin, warning.hook) == ("flaky", "step_logged")
    assert "Traceback" in warning.traceback and "KeyError" in warning.traceback


def test_a_new_lifecycle_reports_again(fake_plugins):
    fake_plugins.add("flaky", FAILING)
    registry = build_registry()
    for _ in range(2):  # one Lifecycle per run: each run reports its own failures
        with pytest.warns(PluginHookWarning):
            Lifecycle.of(registry).step_logged(run=RunInfo(kind="forget"), step=1, values={})


def test_interrupting_still_stops_the_run(fake_plugins):
    fake_plugins.add(
        "stopper",
        """
        import unlearnctl

        @unlearnctl.hookimpl
        def step_logged(step):
            raise KeyboardInterrupt
        """,
    )
    with pytest.raises(KeyboardInterrupt):
        Lifecycle.of(build_registry()).step_logged(run=RunInfo(kind="forget"), step=1, values={})


def test_lifecycle_follows_pluggys_order(fake_plugins):
    source = """
    import unlearnctl
    from tiny_plugin import ORDER

    @unlearnctl.hookimpl
    def run_started(run):
        ORDER.append("{name}")
    """
    import tiny_plugin

    tiny_plugin.ORDER = []  # type: ignore[attr-defined]
    try:
        for name in ("alpha", "beta", "gamma"):
            fake_plugins.add(name, source.format(name=name))
        registry = build_registry()
        registry.hook.run_started(run=None)
        expected = list(tiny_plugin.ORDER)
        tiny_plugin.ORDER.clear()
        Lifecycle.of(registry).run_started(run=RunInfo(kind="forget"))
        assert expected == tiny_plugin.ORDER and sorted(expected) == ["alpha", "beta", "gamma"]
    finally:
        del tiny_plugin.ORDER  # type: ignore[attr-defined]


def test_no_registry_means_no_listeners():
    Lifecycle.of(None).run_finished(run=RunInfo(kind="sample"), result=None)  # nothing to call, no error
    assert LIFECYCLE_HOOKS == ("run_started", "step_logged", "run_finished")
