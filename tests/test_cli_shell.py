"""The CLI shell: --version, plugins / list / show, errors and exit codes, completion, progress."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console

import unlearnctl
from unlearnctl.cli.common import handle_errors
from unlearnctl.cli.progress import attach_progress, format_values
from unlearnctl.errors import UsageError
from unlearnctl.registry import get_registry

BROKEN = "import does_not_exist_anywhere\n"


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout == f"unlearnctl {unlearnctl.__version__}\n"


def test_console_script_version_loads_no_plugin(tmp_path, fake_plugins):
    # A plugin whose import leaves a mark: --version must not load plugins (nor does importing the CLI).
    marker = tmp_path / "imported"
    fake_plugins.add("marker", f"open({str(marker)!r}, 'w').close()\n")
    script = Path(sys.executable).with_name("unlearnctl")
    env = {**os.environ, "PYTHONPATH": str(fake_plugins.site)}
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, env=env, timeout=300)
    assert (done.returncode, done.stdout) == (0, f"unlearnctl {unlearnctl.__version__}\n"), done.stderr
    assert not marker.exists()


def test_unknown_command_and_bad_usage_exit_2(cli):
    assert cli("frobnicate").exit_code == 2
    assert cli("show", "methods").exit_code == 2  # missing NAME


def test_plugins_table_lists_plugins_what_they_provide_and_failures(cli, fake_plugins):
    fake_plugins.selectors("acme", "acme-half", "acme-most", version="2.3.4")
    fake_plugins.add("broken", BROKEN)
    result = cli("plugins")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    acme = next(line for line in out.splitlines() if " acme " in line)
    assert "2.3.4" in acme and "selectors: acme-half, acme-most" in acme
    assert "Failed plugins" in out
    broken = next(line for line in out.splitlines() if " broken " in line)
    assert "import" in broken and "ModuleNotFoundError: No module named 'does_not_exist_anywhere'" in broken
    assert "builtin.selectors" in out and "built-in" in out
    assert result.stderr == ""  # shown in the table, not warned about


def test_plugins_json(cli, fake_plugins, monkeypatch):
    fake_plugins.selectors("acme", "acme-half", version="2.3.4")
    fake_plugins.selectors("quiet", "quiet-one")
    fake_plugins.add("broken", BROKEN)
    monkeypatch.setenv("UNLEARNCTL_DISABLE_PLUGINS", "quiet")
    data = json.loads(cli("plugins", "--json").stdout)
    acme = next(p for p in data["plugins"] if p["name"] == "acme")
    assert acme["version"] == "2.3.4" and acme["builtin"] is False
    assert acme["provides"] == {"selectors": ["acme-half"]}
    assert {"name": "broken", "stage": "import"}.items() <= data["failures"][-1].items()
    assert data["disabled"] == ["quiet"]
    assert "quiet" not in [p["name"] for p in data["plugins"]]
    assert all(p["builtin"] for p in data["plugins"] if p["name"].startswith("builtin."))


@pytest.mark.parametrize("kind", ["selectors", "selector", "SELECTORS"])
def test_list_accepts_singular_and_plural(cli, fake_plugins, kind):
    fake_plugins.selectors("acme", "acme-half", version="2.3.4")
    result = cli("list", kind)
    assert result.exit_code == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "acme-half" in line)
    assert "Fake selector acme-half for tests." in line and "acme 2.3.4" in line


def test_list_json(cli, fake_plugins):
    fake_plugins.selectors("acme", "acme-half", version="2.3.4")
    data = json.loads(cli("list", "selectors", "--json").stdout)
    assert {
        "kind": "selector",
        "name": "acme-half",
        "description": "Fake selector acme-half for tests.",
        "provider": "acme",
        "provider_version": "2.3.4",
    } in data


def test_show_renders_options(cli, fake_plugins):
    fake_plugins.selectors("acme", "acme-half")
    result = cli("show", "selector", "acme-half")
    assert result.exit_code == 0, result.stderr
    assert "selector acme-half — Fake selector acme-half for tests." in result.stdout
    assert "provider: acme 1.0.0" in result.stdout
    row = next(line for line in result.stdout.splitlines() if "fraction" in line)
    assert "0 < float <= 1" in row and "0.5" in row and "share of items to forget" in row


def test_show_json(cli, fake_plugins):
    fake_plugins.selectors("acme", "acme-half")
    data = json.loads(cli("show", "selectors", "acme-half", "--json").stdout)
    assert data["provider"] == "acme"
    assert data["options"] == [
        {
            "name": "fraction",
            "type": "0 < float <= 1",
            "default": 0.5,
            "required": False,
            "help": "share of items to forget",
        }
    ]


def test_unknown_name_suggests_and_exits_2(cli, fake_plugins):
    fake_plugins.selectors("acme", "acme-half")
    result = cli("show", "selectors", "acme-hlaf")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: unknown selector 'acme-hlaf': did you mean 'acme-half'?")
    assert result.stderr.count("\n") == 1


def test_unknown_kind_suggests_and_exits_2(cli):
    for args in (("list", "metod"), ("show", "modles", "x")):
        result = cli(*args)
        assert result.exit_code == 2
        assert result.stderr.startswith("error: unknown kind ")
        assert "did you mean 'methods'?" in result.stderr or "did you mean 'models'?" in result.stderr
        assert result.stderr.count("\n") == 1


def test_failed_plugins_are_warned_about_without_breaking_commands(cli, fake_plugins):
    module = fake_plugins.add("broken", BROKEN)
    fake_plugins.selectors("acme", "acme-half")
    result = cli("list", "selectors")
    assert result.exit_code == 0
    assert "acme-half" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "'broken'" in line]
    assert warnings == [
        "warning: plugin 'broken' failed to import: ModuleNotFoundError: No module named 'does_not_exist_anywhere' "
        f"(at {fake_plugins.site / module}.py:1; see `unlearnctl plugins`; skip it with "
        "UNLEARNCTL_DISABLE_PLUGINS=broken; UNLEARNCTL_DEBUG=1 shows the traceback)"
    ]


def test_duplicate_component_is_refused_with_one_warning_in_the_cli(cli, fake_plugins):
    # the first registrant keeps the name; the command still works (see tests/test_plugin_cli.py)
    fake_plugins.selectors("alpha", "same-name")
    fake_plugins.selectors("beta", "same-name")
    result = cli("list", "selectors")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "'beta'" in line]
    assert len(warnings) == 1 and "'alpha'" in warnings[0]


def test_debug_variable_shows_the_traceback(cli, fake_plugins):
    with pytest.raises(UsageError, match="unknown kind"):
        cli("list", "metod", env={"UNLEARNCTL_DEBUG": "1"})


def _app_raising(exc: BaseException) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @handle_errors
    def boom(name: str = "x") -> None:
        raise exc

    return app


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (KeyboardInterrupt(), 130, "error: interrupted\n"),
        (UsageError("bad input: fix it"), 2, "error: bad input: fix it\n"),
        (unlearnctl.UnlearnError("x" * 300), 1, "error: " + "x" * 300 + "\n"),
    ],
)
def test_error_boundary_exit_codes(exc, code, line):
    from typer.testing import CliRunner

    result = CliRunner().invoke(_app_raising(exc), ["--name", "y"])
    assert result.exit_code == code
    assert result.stderr == line  # one line, never wrapped


def _complete(cli, words: str) -> list[str]:
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    result = cli(env={"_UNLEARNCTL_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)})
    assert result.exit_code == 0
    return result.stdout.split()


def test_shell_completion_of_commands_kinds_and_names(cli, fake_plugins):
    fake_plugins.selectors("acme", "acme-half", "acme-most", "other")
    assert "show" in _complete(cli, "unlearnctl sh")
    assert _complete(cli, "unlearnctl list me") == ["methods", "metrics"]
    assert _complete(cli, "unlearnctl show selectors acme") == ["acme-half", "acme-most"]
    assert _complete(cli, "unlearnctl show nonsense a") == []


def test_show_completion_script(cli, monkeypatch):
    # typer detects the shell from the parent process (shellingham), which under make/CI is `sh`.
    import typer.completion

    monkeypatch.setattr(typer.completion, "_get_shell_name", lambda: "bash")
    result = cli("--show-completion")
    assert result.exit_code == 0
    assert "_UNLEARNCTL_COMPLETE=complete_bash" in result.stdout


class FakeRun:
    description = "forget erasediff"
    total_steps = 4


def test_progress_bar_follows_the_lifecycle_hooks():
    registry = get_registry()
    console = Console(record=True, width=120, force_terminal=False)
    run = FakeRun()
    with attach_progress(registry, console) as progress:
        registry.hook.run_started(run=run)
        for step in range(1, 5):
            registry.hook.step_logged(run=run, step=step, values={"loss": 1.0 / step, "lambda": 0.1, "note": "x"})
        registry.hook.run_finished(run=run, result=None)
        task = progress.progress.tasks[0]
        assert (task.completed, task.total, task.fields["values"]) == (4, 4, "loss=0.25 lambda=0.1")
    text = console.export_text()
    assert "forget erasediff" in text and "4/4" in text
    assert not [p for p in registry.pm.get_plugins() if type(p).__name__ == "RichProgress"]


def test_progress_bar_through_the_lifecycle_learns_the_total_late():
    # train-judge knows its number of steps only once training has started
    from unlearnctl.lifecycle import Lifecycle, RunInfo

    registry = get_registry()
    console = Console(record=True, width=120, force_terminal=False)
    run = RunInfo(kind="train-judge", description="train-judge digits")
    hooks = Lifecycle.of(registry)
    with attach_progress(registry, console) as progress:
        hooks.run_started(run=run)
        run.total_steps = 3
        for step in range(1, 4):
            hooks.step_logged(run=run, step=step, values={"epoch": 1, "loss": 0.5})
        hooks.run_finished(run=run, result=None)
        task = progress.progress.tasks[0]
        assert (task.completed, task.total) == (3, 3)
    text = console.export_text()
    assert "train-judge digits" in text and "3/3" in text


def test_format_values_keeps_numbers_only_and_is_short():
    values = {"loss": 0.123456, "ok": True, "name": "x", "time": 3.0, **{f"v{i}": i for i in range(9)}}
    assert format_values(values) == "loss=0.1235 v0=0 v1=1 v2=2 v3=3"


def test_cli_reference_documents_every_command(repo_root):
    from typer.main import get_command

    from unlearnctl.cli.app import app

    text = (repo_root / "docs" / "cli.md").read_text(encoding="utf-8")
    commands = sorted(get_command(app).commands)
    assert {"plugins", "list", "show"} <= set(commands)
    missing = [name for name in commands if f"## `unlearnctl {name}`" not in text]
    assert not missing, f"docs/cli.md does not document {missing}: run `make docs`"


# --- shared options: declared once, the same everywhere ---------------------------------------------

SHARED_OPTIONS = (
    "--device",
    "--seed",
    "--out",
    "--data-dir",
    "--data-option",
    "--threads",
    "--json",
    "--set",
    "--config",
)


def _commands_with(flag: str) -> dict[str, Any]:
    """The option ``flag`` of every command that has it, by command name."""
    from typer.main import get_command

    from unlearnctl.cli.app import app

    return {
        name: param
        for name, command in get_command(app).commands.items()
        for param in command.params
        if flag in getattr(param, "opts", [])
    }


def test_shared_options_are_spelt_only_in_cli_options(repo_root):
    # every CLI module takes them from unlearnctl.cli.options: none spells one of their flags itself
    cli_dir = repo_root / "src" / "unlearnctl" / "cli"
    for path in sorted(cli_dir.glob("*.py")):
        if path.name == "options.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        spelt = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in SHARED_OPTIONS}
        assert not spelt, f"{path.name} declares {sorted(spelt)}: use unlearnctl.cli.options"


@pytest.mark.parametrize("flag", ["--device", "--seed", "--data-dir", "--data-option", "--json"])
def test_a_shared_option_reads_the_same_in_every_command(flag):
    options = _commands_with(flag)
    assert len(options) >= 4, options
    assert len({(tuple(p.opts), p.help) for p in options.values()}) == 1, {n: p.help for n, p in options.items()}


def test_out_set_and_threads_share_their_flags_and_wording():
    from unlearnctl.cli.options import OUT_RULE

    outs = _commands_with("--out")
    assert set(outs) == {
        "forget", "eval", "audit", "sample", "train", "train-judge", "replay", "report", "noise-floor", "sweep"
    }  # fmt: skip
    assert all(sorted(p.opts) == ["--out", "-o"] for p in outs.values())
    # eval and audit write into a run folder; report and noise-floor write one file, replaced only with
    # --overwrite; sweep resumes its own study folder
    files = ("report", "noise-floor")
    assert all(OUT_RULE in (p.help or "") for name, p in outs.items() if name not in ("eval", "audit", "sweep", *files))
    assert all("never overwritten unless --overwrite" in (outs[name].help or "") for name in files)
    assert "resumed when it holds a study" in (outs["sweep"].help or "")
    assert "never overwritten" in (outs["audit"].help or "") and "audit.json" in (outs["audit"].help or "")
    assert "metrics.json" in (outs["eval"].help or "")
    sets = _commands_with("--set")
    assert set(sets) == {"forget", "eval", "audit", "train"}
    assert all(sorted(p.opts) == ["--set", "-s"] and (p.help or "").endswith("; repeatable.") for p in sets.values())
    threads = _commands_with("--threads")
    assert set(threads) == {"forget", "eval", "audit", "noise-floor"}
    assert all("1 is fastest when other jobs share the cores" in (p.help or "") for p in threads.values())


@pytest.mark.parametrize(
    "args",
    [
        ["forget", "--model", "tiny-cond", "--classes", "1"],
        ["train", "--dataset", "tiny"],
        ["train-judge", "--dataset", "tiny"],
        ["sample", "--model", "tiny-cond", "-n", "1"],
    ],
    ids=lambda a: a[0],
)
def test_an_existing_out_is_refused_the_same_way_before_any_work(cli, tiny, tmp_path, args):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli(*args, "--out", out)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: '{out}' already exists")
    assert "unlearnctl never overwrites a run folder; choose another --out" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".taken")]
