"""The documentation is true: every command line in README.md and the Snakefile header parses and
dry-runs (so a wrong word order cannot come back), config/README.md matches the schema, and every
number in the README's results comes from the committed tables."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import UNACTIVATED
from expe.cli import build_parser
from expe.config import schema_markdown

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import update_readme  # noqa: E402
from update_readme import CLAIMS, SECTIONS as README_SECTIONS  # noqa: E402
README = (REPO / "README.md").read_text()


def commands(text: str) -> list[str]:
    """Command lines in indented or fenced code blocks (continuation lines joined), comments dropped."""
    out, lines = [], text.splitlines()
    in_fence = False
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln.strip().startswith("```"):
            in_fence = not in_fence
            i += 1
            continue
        code = in_fence or ln.startswith("    ") or ln.startswith("#   ")
        cmd = ln.lstrip("# ").strip() if ln.startswith("#   ") else ln.strip()
        while cmd.endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd = cmd[:-1] + " " + lines[i].lstrip("# ").strip()
        cmd = cmd.split("  #")[0].strip()
        if code and re.match(r"^(\.venv/bin/)?(snakemake|expe) ", cmd):
            out.append(cmd)
        i += 1
    return out


SNAKEFILE_HEAD = (REPO / "Snakefile").read_text().split("import time")[0]
CMDS = sorted(set(commands(README) + commands(SNAKEFILE_HEAD)))


def test_the_readme_and_the_snakefile_show_the_commands_a_user_types():
    snake = [c for c in CMDS if "snakemake" in c.split()[0]]
    assert any("paper_tables" in c and "--cores 2" in c for c in snake)
    assert any("profiles/slurm" in c for c in snake) and any("beyond_paper" in c for c in snake)
    assert any("--resources gpu=1" in c for c in snake)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A fresh folder that sees the repository's workflow and configs (as a clone would)."""
    d = tmp_path_factory.mktemp("readme")
    for name in ("Snakefile", "workflow", "config", "profiles", "envs"):
        (d / name).symlink_to(REPO / name)
    # the README's "Your own text" example: a copy of the default with data.source text_dir
    books = d / "my_books"
    books.mkdir()
    for i in range(12):
        (books / f"book{i}.txt").write_text(f"Book {i}. " + "It was a dark and stormy night. " * 2000)
    (d / "my_config.yaml").write_text(
        "run_name: my_books\n"
        f"data: {{source: text_dir, path: {books}, min_tokens: 2048, test_min_tokens: 4097, dev_size: 2, test_size: 8}}\n")
    return d


@pytest.mark.slow
@pytest.mark.parametrize("cmd", [c for c in CMDS if "snakemake" in c.split()[0]])
def test_every_snakemake_command_in_the_readme_dry_runs(cmd, workdir):
    argv = shlex.split(cmd)
    argv = [sys.executable, "-m", "snakemake"] + argv[1:] + ["-n", "--quiet", "rules"]
    r = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=300, env=UNACTIVATED)
    assert r.returncode == 0, f"{cmd}\n{r.stderr[-3000:]}"


@pytest.mark.parametrize("cmd", [c for c in CMDS if c.startswith("expe ")])
def test_every_expe_command_in_the_readme_parses(cmd):
    argv = shlex.split(cmd)[1:]
    args = build_parser().parse_args(argv)  # exits 2 with a message on a bad word order or value
    assert args.fn.__name__ == "cmd_" + argv[0].replace("-", "_")  # the command runs its own handler


def test_config_readme_lists_every_key_of_the_schema():
    assert (REPO / "config" / "README.md").read_text() == schema_markdown(), "run: expe config-doc --out config/README.md"


def _section(text: str, name: str) -> str:
    m = re.search(rf"<!-- {name}:begin -->\n(.*?)<!-- {name}:end -->", text, re.S)
    assert m, f"README has no <!-- {name}:begin/end --> section"
    return m.group(1)


@pytest.mark.parametrize("name, path", [(n, p) for n, p in README_SECTIONS.items() if (REPO / p).exists()])
def test_the_readme_results_are_the_generated_summaries_of_the_committed_tables(name, path):
    assert _section(README, name) == (REPO / path).read_text()


@pytest.mark.parametrize("name", list(CLAIMS))
def test_every_number_of_the_readme_claims_is_the_table_cell_its_placeholder_names(name):
    """The claims are prose written by people with placeholders for numbers ({{table|row|column}}): the
    README holds the rendered template (each number read from the cell it names, so it cannot drift from
    the tables), and the template writes no number of its own."""
    template, tables = CLAIMS[name]
    text = (REPO / template).read_text()
    literal = update_readme.RESULT.findall(update_readme.PLACEHOLDER.sub("", text))
    assert not literal, f"{template} writes numbers outside placeholders: {literal}"
    assert update_readme.PLACEHOLDER.findall(text), f"{template} names no table cell"
    assert _section(README, name) == update_readme.render(REPO / template, REPO / tables)


def test_a_placeholder_naming_no_cell_is_refused(tmp_path):
    (tmp_path / "t.md").write_text("| Model | Loss ev=1 |\n|---|---:|\n| ExPE | 4.180 ± 0.020 |\n")
    (tmp_path / "claim.md").write_text("ExPE: {{t|ExPE|Loss ev=1|first}}.")
    assert update_readme.render(tmp_path / "claim.md", tmp_path) == "ExPE: 4.180."
    (tmp_path / "claim.md").write_text("ExPE: {{t|ExPE|Loss ev=2}}.")
    with pytest.raises(KeyError, match="has no column 'Loss ev=2'"):
        update_readme.render(tmp_path / "claim.md", tmp_path)


LOCAL_COPIES = "Running the paper's tasks from local copies"


def _local_copies_example() -> str:
    """The README's worked example of the paper's tasks from a copied cache."""
    text = README
    if f"### {LOCAL_COPIES}" not in text:
        pytest.fail(f"no '### {LOCAL_COPIES}' section in README.md")
    return re.split(r"\n#{1,3} ", text.split(f"### {LOCAL_COPIES}", 1)[1], maxsplit=1)[0]


@pytest.mark.slow
def test_the_local_copies_example_dry_runs_offline(tmp_path, monkeypatch):
    """Its download step names the paper's tasks of the default config, and its offline run of the
    workflow with the copied cache plans the benchmark jobs (a dry run, without network)."""
    import ast

    import conftest
    from expe import config as C

    example = _local_copies_example()
    paper_tasks = [t for t in C.load(str(REPO / "config" / "config.yaml"))["benchmarks"]["tasks"]
                   if t != "heldout_continuation"]
    lines = [ln.strip() for ln in example.splitlines()]
    download = next(ln for ln in lines if ln.startswith("python -c "))
    code = shlex.split(download)[2]
    ast.parse(code)
    assert re.findall(r"'([a-z_]+)'", code) == paper_tasks
    fetch = next(shlex.split(c.strip("`")) for c in re.findall(r"`expe benchmark-data[^`]*`", example))
    assert build_parser().parse_args(fetch[1:]).tasks.split(",") == paper_tasks
    run = shlex.split(next(ln for ln in lines if " snakemake " in ln))
    env = dict(w.split("=", 1) for w in run[: run.index("snakemake")])
    assert env["HF_DATASETS_OFFLINE"] == "1" and env["HF_DATASETS_CACHE"]
    for k, v in env.items():  # as the example sets them, for Snakemake and every job it would start
        monkeypatch.setitem(conftest.UNACTIVATED, k, v)
    r = conftest.smk(*run[run.index("snakemake") + 1 :], "-n", cwd=tmp_path)
    counts = conftest.job_counts(r.stdout)
    from expe.workflow import Plan

    expected = len(Plan(C.load(str(REPO / "config" / "config.yaml"))).bench_results())  # every row and seed
    assert counts["benchmark_data"] == 1 and counts["heldout_task"] == 1 and counts["benchmark"] == expected
