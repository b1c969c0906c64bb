"""Start-up cost of the commands that only describe: CPU seconds and peak memory of the whole process.

Runs each command ``--runs`` times (default 5) as a user would (the ``unlearnctl`` console script of this
interpreter's environment) and takes the median of its CPU time (user + sys) and of its maximum resident
set size, both read from the finished child's own resource usage (``os.wait4``). ``--write`` puts the
table into docs/performance.md, section "Start-up" (only the table between its markers is replaced).

    python bench/startup.py                 # print the table
    python bench/startup.py --runs 9 --write
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys

from _cli import ROOT, unlearnctl

PAGE = ROOT / "docs" / "performance.md"
SECTION = "## Start-up"

#: (command line, CPU-second target or None, MiB target or None): the targets of docs/performance.md
#: (a command's own ``--help`` has none: it only must not import torch, which tests/test_startup.py checks)
COMMANDS: tuple[tuple[str, float | None, int | None], ...] = (
    ("--version", 0.3, 150),
    ("--help", 0.3, 150),
    ("forget --help", None, None),
    ("list methods", 1.5, None),
    ("show method erasediff", 1.5, None),
    ("plugins", 1.5, None),
)


def measure(args: list[str]) -> tuple[float, float]:
    """(CPU seconds user + sys, max RSS in MiB) of one run of ``unlearnctl ARGS``."""
    env = {**os.environ, "COLUMNS": "100"}
    child = subprocess.Popen(
        [*unlearnctl(), *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert child.stderr is not None
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.stderr.write(err.decode(errors="replace")[-2000:])
        raise SystemExit(f"unlearnctl {' '.join(args)} failed with exit code {child.returncode}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def table(runs: int) -> str:
    lines = [
        "| command | CPU s (user + sys) | max RSS MiB | target |",
        "| --- | --- | --- | --- |",
    ]
    for command, cpu_target, mib_target in COMMANDS:
        samples = [measure(command.split()) for _ in range(runs)]
        cpu = statistics.median(s[0] for s in samples)
        mib = statistics.median(s[1] for s in samples)
        targets = []
        if cpu_target is not None:
            targets.append(f"<= {cpu_target} s")
        if mib_target is not None:
            targets.append(f"<= {mib_target} MiB")
        target = ", ".join(targets) or "no torch (tests/test_startup.py)"
        lines.append(f"| `unlearnctl {command}` | {cpu:.2f} | {mib:.0f} | {target} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


BEGIN = "<!-- bench/startup.py: table -->"
END = "<!-- end of bench/startup.py table -->"


def write_section(body: str, runs: int) -> None:
    """Replace the generated table of docs/performance.md's "Start-up" section (its prose is kept), or
    add the section at the end of the page."""
    block = (
        f"{BEGIN}\n"
        f"`python bench/startup.py --runs {runs} --write` ({platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} from other jobs when it ran; median "
        f"of {runs} runs of the whole process; CPU = user + sys of the finished process, from `os.wait4`):\n\n"
        f"{body}\n"
        f"{END}"
    )
    page = PAGE.read_text(encoding="utf-8")
    pattern = re.compile(rf"{re.escape(BEGIN)}.*?{re.escape(END)}", re.S)
    if pattern.search(page):
        page = pattern.sub(lambda _: block, page, count=1)
    else:
        page = page.rstrip("\n") + f"\n\n{SECTION}\n\n{block}\n"
    PAGE.write_text(page, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (the median is reported)")
    parser.add_argument("--write", action="store_true", help="update docs/performance.md, section 'Start-up'")
    args = parser.parse_args()
    body = table(max(1, args.runs))
    if args.write:
        write_section(body, max(1, args.runs))
        print(f"wrote {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
