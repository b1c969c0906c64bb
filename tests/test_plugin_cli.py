"""`unlearnctl plugins` and the other commands with broken or clashing plugins: duplicates, debugging
a failing plugin, wrapped messages, lifecycle hooks."""

from __future__ import annotations

import json

import unlearnctl
from unlearnctl.cli.common import reset_warnings

RADIUS = """
import json

SETTINGS = json.loads("{}")
RADIUS = SETTINGS["radius"]
"""

TRACKER = """
import unlearnctl

@unlearnctl.hookimpl
def run_started(run):
    pass

@unlearnctl.hookimpl
def step_logged(run, step, values):
    pass
"""


def test_a_duplicate_name_breaks_no_command(cli, fake_plugins):
    fake_plugins.selectors("acme", "classes", "acme-half")  # 'classes' is a built-in selector
    for args in (("list", "datasets"), ("list", "selectors"), ("show", "selector", "acme-half")):
        reset_warnings()  # warnings are printed once per process
        result = cli(*args)
        assert result.exit_code == 0, result.output
        warnings = [line for line in result.stderr.splitlines() if "'acme'" in line]
        assert len(warnings) == 1, result.stderr
        assert warnings[0].startswith("warning: plugin 'acme': selector 'classes' ")
        assert "refused: built-in plugin 'builtin.selectors' already provides a selector named 'classes'" in warnings[0]
        assert "uninstall" not in warnings[0]
        assert "UNLEARNCTL_DISABLE_PLUGINS=acme" in warnings[0]
    listing = cli("list", "selectors").stdout
    row = next(line for line in listing.splitlines() if " classes " in line)
    assert row.rstrip(" │").endswith(f"builtin.selectors {unlearnctl.__version__}")

    result = cli("plugins")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    out = " ".join(result.stdout.split())
    assert "Refused components" in out
    assert "acme │ selector classes │ builtin.selectors │" in out
    if "Failed plugins" in out:  # the plugin itself works: it is not among the failed ones
        assert " acme " not in out[out.index("Failed plugins") : out.index("Refused components")]
    data = json.loads(cli("plugins", "--json").stdout)
    failure = next(f for f in data["failures"] if f["name"] == "acme")
    assert failure["stage"] == "component"
    assert failure["component"] == {"kind": "selector", "name": "classes"}
    assert failure["kept_by"] == "builtin.selectors"
    acme = next(p for p in data["plugins"] if p["name"] == "acme")
    assert acme["provides"] == {"selectors": ["acme-half"]}


def test_a_failing_plugin_names_its_file_and_line_and_debug_shows_the_traceback(cli, fake_plugins):
    module = fake_plugins.add("radius", RADIUS)
    path = fake_plugins.site / f"{module}.py"

    result = cli("list", "selectors")
    assert result.exit_code == 0
    assert [line for line in result.stderr.splitlines() if "'radius'" in line] == [
        f"warning: plugin 'radius' failed to import: KeyError: 'radius' (at {path}:5; see `unlearnctl plugins`; "
        "skip it with UNLEARNCTL_DISABLE_PLUGINS=radius; UNLEARNCTL_DEBUG=1 shows the traceback)"
    ]

    reset_warnings()  # warnings are printed once per process
    result = cli("list", "selectors", env={"UNLEARNCTL_DEBUG": "1"})
    assert result.exit_code == 0
    assert "Traceback (most recent call last):" in result.stderr
    assert f'File "{path}", line 5, in <module>' in result.stderr
    assert 'RADIUS = SETTINGS["radius"]' in result.stderr
    assert result.stderr.rstrip().endswith("KeyError: 'radius'")

    result = cli("plugins", env={"UNLEARNCTL_DEBUG": "1"})
    assert result.exit_code == 0
    assert "traceback of plugin 'radius' (import):" in result.stderr
    assert f'File "{path}", line 5, in <module>' in result.stderr
    assert f"at {path}:5" in "".join(result.stdout.split()).replace("at/", "at /")


def test_plugins_table_wraps_long_messages_instead_of_cutting_them(cli, fake_plugins):
    words = " ".join(f"word{i:02d}" for i in range(40))
    long_token = "x" * 90
    fake_plugins.add("wordy", f"raise RuntimeError({(words + ' ' + long_token)!r})\n")
    result = cli("plugins", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout and "..." not in result.stdout
    failed = result.stdout[result.stdout.index("Failed plugins") :]
    # the Error column, read back line by line: every character of the message is there, in order
    cells = [line.split("│")[3] for line in failed.splitlines() if line.count("│") == 4]
    text = "".join("".join(cells).split())
    assert "".join(f"RuntimeError: {words} {long_token}".split()) in text

    data = json.loads(cli("plugins", "--json", env={"COLUMNS": "40"}).stdout)
    failure = next(f for f in data["failures"] if f["name"] == "wordy")
    assert failure["error"] == f"RuntimeError: {words} {long_token}"
    assert failure["location"].endswith(".py:1")
    assert failure["traceback"].rstrip().endswith(f"RuntimeError: {words} {long_token}")


def test_plugins_shows_the_lifecycle_hooks_of_each_plugin(cli, fake_plugins):
    fake_plugins.add("tracker", TRACKER)
    fake_plugins.selectors("acme", "acme-half")
    result = cli("plugins")
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "Plugin" in line and "Provides" in line)
    assert "Hooks" in header
    tracker = next(line for line in result.stdout.splitlines() if " tracker " in line)
    assert "run_started, step_logged" in tracker
    data = json.loads(cli("plugins", "--json").stdout)
    hooks = {p["name"]: p["hooks"] for p in data["plugins"]}
    assert hooks["tracker"] == ["run_started", "step_logged"]
    assert hooks["acme"] == [] and hooks["builtin.selectors"] == []
    assert next(p for p in data["plugins"] if p["name"] == "acme")["distribution"] == "fake-acme"
