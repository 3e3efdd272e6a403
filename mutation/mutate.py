"""`make mutate`: mutation testing of the core with mutmut, and its summary in docs/testing.md.

mutmut finds the code it mutates by path (``src/protoc_x/runtime/router.py`` is the module
``protoc_x.runtime.router``), while this repository keeps ``runtime/`` and ``generated/`` at its
top level and maps them into ``protoc_x`` at install time. So the run happens in a staging tree,
``build/mutate/``, laid out as the wheel is: ``src/protoc_x/{runtime,generated,grammars,specs}``
next to ``tests/``. mutmut copies that tree into ``build/mutate/mutants/``, puts the mutated
``src`` first on ``sys.path`` and runs, for each mutant, only the tests that executed the function
it changed (in a forked worker, so a mutant costs milliseconds plus its tests).

Tests that start subprocesses (the CLI, ``--workers``, the wheel) import the installed, unmutated
package: they cannot kill a mutant, and mutmut does not count them for one. The core is covered by
in-process tests.

Every surviving mutant must be killed by a test or listed in ``mutation/equivalent.toml`` with the
reason it cannot change behaviour. Survivors that are neither are printed, written to
``build/mutate/survivors.toml`` in the same format (reason empty) and make the command exit 1.

    python mutation/mutate.py            # stage, run, report, update docs/testing.md
    python mutation/mutate.py --report   # report the last run again without running it
    # while killing one module's mutants: only it, only some tests; docs/testing.md untouched
    python mutation/mutate.py --module runtime/router.py --tests tests/runtime/test_router.py
    # (--stage DIR keeps two such runs apart)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / "mutate"
EQUIVALENT = ROOT / "mutation" / "equivalent.toml"
DOC = ROOT / "docs" / "testing.md"
BEGIN, END = "<!-- make mutate: begin -->", "<!-- make mutate: end -->"

# The core modules, as repository paths. Their staged path is src/protoc_x/<package path>.
MODULES = [
    "runtime/router.py",
    "runtime/pool.py",
    "runtime/stream.py",
    "runtime/proxy.py",
    "runtime/filters/__init__.py",
    "runtime/filters/fault.py",
    "runtime/filters/header_mutation.py",
    "runtime/filters/local_rate_limit.py",
    "runtime/filters/node_labels.py",
    "protoc_x/check.py",
    "protoc_x/plan.py",
    "protoc_x/backends/python/decode.py",
    "protoc_x/backends/python/encode.py",
    "protoc_x/backends/python/exprs.py",
    "runtime/fieldtypes/hessian2.py",
    "runtime/fieldtypes/tars.py",
    "runtime/fieldtypes/thrift.py",
    "runtime/fieldtypes/varint.py",
]
# Modules whose surviving mutants must all be killed or triaged equivalent (issue 11).
STRICT = (
    "runtime/router.py",
    "runtime/pool.py",
    "runtime/stream.py",
    "runtime/proxy.py",
    "runtime/filters/",
    "protoc_x/check.py",
)

# The fast, in-process part of the suite (peers, e2e and CLI tests run other processes).
TESTS = ["tests/runtime", "tests/compiler", "tests/codec", "tests/fieldtypes"]

# repository folder -> folder inside the staged package (as pyproject's package-dir maps them)
PACKAGE_DIRS = {
    "protoc_x": "src/protoc_x",
    "runtime": "src/protoc_x/runtime",
    "generated": "src/protoc_x/generated",
    "grammars": "src/protoc_x/grammars",
    "specs": "src/protoc_x/specs",
}
# also copied as they are, for tests that read them by path (never protoc_x/: pytest puts the
# staging root on sys.path, and an unmutated protoc_x there would shadow src/protoc_x)
PLAIN = [
    "tests",
    "specs",
    "grammars",
    "generated",
    "runtime",
    "docs",
    "benchmarks",
    "constraints.txt",
    "README.md",
    "Makefile",
]
# (compiled runtime modules stay out: mutmut mutates the Python source, which must be what runs)
IGNORE = shutil.ignore_patterns("__pycache__", "node_modules", ".hypothesis", "*.pyc", "*.so")


def staged(repo_path: str) -> str:
    top, _, rest = repo_path.partition("/")
    return f"{PACKAGE_DIRS[top]}/{rest}"


def unstaged(stage_path: str) -> str:
    for top, folder in sorted(PACKAGE_DIRS.items(), key=lambda item: -len(item[1])):
        if top != "protoc_x" and stage_path.startswith(folder + "/"):
            return f"{top}/{stage_path[len(folder) + 1:]}"
    return "protoc_x/" + stage_path[len("src/protoc_x/") :]


def stage(modules: list[str], tests: list[str]) -> None:
    """A fresh staging tree (mutmut's results from an earlier run go with it)."""
    shutil.rmtree(STAGE, ignore_errors=True)
    STAGE.mkdir(parents=True)
    for folder, target in PACKAGE_DIRS.items():
        shutil.copytree(ROOT / folder, STAGE / target, ignore=IGNORE, dirs_exist_ok=True)
    for name in PLAIN:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, STAGE / name, ignore=IGNORE)
        else:
            shutil.copy2(ROOT / name, STAGE / name)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pytest_options = project["tool"]["pytest"]["ini_options"]
    only = ", ".join(json.dumps(staged(module)) for module in modules)
    selection = ", ".join(json.dumps(path) for path in tests)
    (STAGE / "pyproject.toml").write_text(
        "# written by mutation/mutate.py\n"
        "[tool.pytest.ini_options]\n"
        f"testpaths = {json.dumps(pytest_options['testpaths'])}\n"
        f"addopts = {json.dumps(pytest_options['addopts'])}\n"
        f"markers = {json.dumps(pytest_options['markers'])}\n"
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = [{only}]\n"
        f"pytest_add_cli_args_test_selection = [{selection}]\n"
        f"also_copy = {json.dumps([name for name in PLAIN if name != 'tests'])}\n"
        # a mutant whose tests run 4x their clean time + 5 s has hung them: killed (mutmut's
        # default, 15x + 1 s, spends minutes on each hang of a 10 s test set)
        "timeout_multiplier = 4.0\ntimeout_constant = 5.0\n"
    )


def run_mutmut(children: int) -> float:
    started = time.monotonic()
    mutmut = Path(sys.executable).parent / "mutmut"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PROTOC_X_PURE="1")
    done = subprocess.run([str(mutmut), "run", "--max-children", str(children)], cwd=STAGE, env=env)
    if done.returncode:
        sys.exit(f"mutmut run failed ({done.returncode}); see its output above")
    return time.monotonic() - started


def function_of(module: str, mutant: str) -> str:
    """``protoc_x.runtime.router.xǁRouterǁpick__mutmut_3`` -> ``Router.pick``."""
    name = re.sub(r"__mutmut_\d+$", "", mutant[len(module) + 1 :])
    if name.startswith("xǁ"):
        return ".".join(name[2:].split("ǁ"))
    return name[2:] if name.startswith("x_") else name


def change_of(diff: str) -> str:
    """The mutation in one line: removed lines => added lines, whitespace squeezed."""
    squeeze = lambda line: " ".join(line[1:].split())  # noqa: E731
    lines = diff.splitlines()
    removed = [
        squeeze(line) for line in lines if line.startswith("-") and not line.startswith("---")
    ]
    added = [squeeze(line) for line in lines if line.startswith("+") and not line.startswith("+++")]
    return " / ".join(removed) + " => " + " / ".join(added)


def results(stage_dir: Path) -> dict[str, tuple[list[str], list[tuple[str, str, str]]]]:
    """Per repository module: the tests it ran against, and (mutant, status, change) for every
    mutant of the last run in ``stage_dir``."""
    cwd = os.getcwd()
    os.chdir(stage_dir)  # mutmut reads its config and files from the working directory
    from mutmut.configuration import reset_config
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    reset_config()
    mutmut_config = tomllib.loads((stage_dir / "pyproject.toml").read_text())["tool"]["mutmut"]
    tests = mutmut_config["pytest_add_cli_args_test_selection"]
    found: dict[str, tuple[list[str], list[tuple[str, str, str]]]] = {}
    for meta in sorted((stage_dir / "mutants").rglob("*.py.meta")):
        stage_path = str(meta.relative_to(stage_dir / "mutants"))[: -len(".meta")]
        data = json.loads(meta.read_text())
        rows = found.setdefault(unstaged(stage_path), (tests, []))[1]
        for mutant, code in data["exit_code_by_key"].items():
            status = status_by_exit_code[code]
            change = ""
            if status not in ("killed", "timeout"):
                change = change_of(get_diff_for_mutant(mutant, path=stage_path))
            rows.append((mutant, status, change))
    os.chdir(cwd)
    return found


def load_equivalent() -> dict[tuple[str, str, str], str]:
    entries = tomllib.loads(EQUIVALENT.read_text()).get("mutant", [])
    return {(e["file"], e["function"], e["change"]): e["reason"] for e in entries}


def toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def report(
    found: dict[str, tuple[list[str], list[tuple[str, str, str]]]],
    seconds: float | None,
    modules: list[str],
    doc: bool,
) -> int:
    equivalent = load_equivalent()
    used: set[tuple[str, str, str]] = set()
    table = []
    open_survivors = []
    for path in modules:
        tests, rows = found.get(path, (None, []))
        module = "protoc_x." + staged(path)[len("src/protoc_x/") : -len(".py")].replace("/", ".")
        module = module.removesuffix(".__init__")
        counts: Counter[str] = Counter()
        for mutant, status, change in rows:
            if status in ("killed", "timeout"):
                counts["killed"] += 1
                continue
            if status == "not checked":  # the run was stopped before this mutant
                counts["not checked"] += 1
                continue
            key = (path, function_of(module, mutant), change)
            if status == "survived" and key in equivalent:
                used.add(key)
                counts["equivalent"] += 1
                continue
            counts["no tests" if status == "no tests" else "survived"] += 1
            open_survivors.append((path, key[1], change, status, mutant))
        table.append((path, tests, len(rows), counts))
    stale = sorted(key for key in set(equivalent) - used if key[0] in modules)

    selections = sorted({tuple(tests) for _, tests, _, _ in table if tests})
    names = {selection: chr(ord("A") + i) for i, selection in enumerate(selections)}
    lines = [
        BEGIN,
        f"Run on {datetime.date.today().isoformat()} by `mutation/mutate.py` (mutmut "
        f"{_mutmut_version()})" + (f" in {seconds / 60:.0f} min." if seconds else "."),
        "Tests each module ran against: "
        + "; ".join(f"{names[s]}: {', '.join(s)}" for s in selections)
        + ".",
        "",
        "| module | tests | mutants | killed | equivalent | survived | no tests | not checked |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    total: Counter[str] = Counter()
    for path, tests, generated, counts in table:
        if not tests:
            lines.append(f"| `{path}` | not run | | | | | | |")
            continue
        total.update(counts)
        total["mutants"] += generated
        lines.append(
            f"| `{path}` | {names[tuple(tests)]} | {generated} | {counts['killed']} "
            f"| {counts['equivalent']} | {counts['survived']} | {counts['no tests']} "
            f"| {counts['not checked']} |"
        )
    lines.append(
        f"| **all** | | {total['mutants']} | {total['killed']} | {total['equivalent']} "
        f"| {total['survived']} | {total['no tests']} | {total['not checked']} |"
    )
    lines.append("")
    strict_open = [s for s in open_survivors if s[0].startswith(STRICT)]
    if strict_open:
        lines.append("Surviving mutants in the strict modules, not yet killed or triaged:")
        lines.append("")
        for path, function, change, status, mutant in strict_open:
            lines.append(f"- `{path}` `{function}` ({status}): `{change}`")
        lines.append("")
    if len(open_survivors) > len(strict_open):
        lines.append(
            f"{len(open_survivors) - len(strict_open)} surviving mutants in the other modules are "
            "not triaged yet (`make mutate` lists them in `build/mutate/survivors.toml`)."
        )
        lines.append("")
    lines.append(END)
    block = "\n".join(lines)
    if doc:
        text = DOC.read_text()
        if BEGIN in text:
            text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        DOC.write_text(text)

    print(block)
    with (STAGE / "survivors.toml").open("w") as out:
        for path, function, change, status, mutant in open_survivors:
            out.write(f"# {mutant} ({status})\n[[mutant]]\nfile = {toml_string(path)}\n")
            out.write(f"function = {toml_string(function)}\nchange = {toml_string(change)}\n")
            out.write('reason = ""\n\n')
    for key in stale:
        print(f"mutation/equivalent.toml: no such surviving mutant any more: {key}")
    unfinished = [path for path, _, _, counts in table if counts["not checked"]]
    if unfinished:
        print(f"the run did not finish: mutants not checked in {', '.join(unfinished)}")
    if open_survivors:
        print(
            f"{len(open_survivors)} open survivors ({len(strict_open)} in the strict modules); "
            f"see {STAGE / 'survivors.toml'}"
        )
    return 1 if strict_open or stale or unfinished else 0


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def main() -> None:
    global STAGE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="report the last run again")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--module", action="append", choices=MODULES, help="only these modules")
    parser.add_argument("--tests", nargs="+", default=TESTS, help="only these tests")
    parser.add_argument(
        "--stage",
        type=Path,
        action="append",
        help=f"staging tree (default {STAGE}); with --report, several runs' trees can be joined",
    )
    parser.add_argument(
        "--doc", action="store_true", help="write docs/testing.md (a full run does)"
    )
    args = parser.parse_args()
    stages = [path.resolve() for path in args.stage or [STAGE]]
    STAGE = stages[0]
    modules = args.module or MODULES
    seconds = None
    if not args.report:
        stage(modules, args.tests)
        seconds = run_mutmut(args.children)
    found = {}
    for stage_dir in stages:
        found.update(results(stage_dir))
    full_run = not args.report and modules == MODULES and args.tests == TESTS
    sys.exit(report(found, seconds, modules, args.doc or full_run))


if __name__ == "__main__":
    main()
