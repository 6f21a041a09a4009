"""Notebooks: sources are stored clean, run with tiny parameters, and re-run to the same outputs."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

# Tiny settings per notebook: seconds on a CPU. These are code tests, never results.
# What every real-data chapter trains in its smoke test: random images, a width-4 ResNet-18, one epoch.
TINY_TRAINING = dict(
    synthetic=[64, 20],
    epochs=1,
    width=4,
    eval_pgd_steps=1,
    picture_images=1,
    kind="smoke",
    train_missing=True,
    progress=False,
)
REAL_DATA_SMOKE = dict(TINY_TRAINING, pool_size=8, rows=["vanilla", "class_mean", "rigd_l2"], extra_rows=[])
SMOKE_PARAMETERS = {
    "toy_manifold": dict(
        seeds=[0],
        epochs=2,
        longer_epochs=3,
        train_per_mode=30,
        test_per_mode=10,
        pool_size=5,
        progress=False,
        sweep_lams=[0.0, 1.0],
        sweep_sources=["nearest_neighbor"],
        interactive=True,
    ),
    # The CPU scale on STL-10's image size (the paper scale on CIFAR-10 is test_real_data_chapters_show_no_smoke_runs').
    "real_data": dict(REAL_DATA_SMOKE, dataset="stl10", scales=["cpu"]),
    "lambda_ablation": dict(TINY_TRAINING, lams=[0.1, 1.0], interactive=True, scales=["cpu"]),
    "seed_error_bars": dict(TINY_TRAINING, seeds=[0, 1], scales=["paper", "cpu"]),
    "k_study": dict(TINY_TRAINING, ks=[1, 10]),
    "reproduction_status": dict(toy_record="missing.record.json"),
    "gradient_masking": dict(smoke_run=True, kind="smoke", progress=False),
    "score_based": dict(TINY_TRAINING, smoke_denoiser=True, lam=0.4),
    "randomized_smoothing": dict(
        TINY_TRAINING, sigmas=[0.25], compared=["vanilla", "adversarial_l2"], evaluate_missing=True
    ),
    # The score-based rows need a denoiser, which only the score-based chapter's smoke run trains: here they
    # are left out, and their code is tested without the notebook (test_denoiser, test_latest_chapter).
    "latest_version": dict(
        TINY_TRAINING,
        seeds=[0],
        pool_size=8,
        boost_sources=["nearest_neighbor"],
        vit_rows=["vanilla", "nearest_neighbor"],
    ),
    "introduction": dict(kind="smoke", toy_record="missing.record.json"),
    "conclusion": dict(kind="smoke", toy_record="missing.record.json"),
    "cpu_scale": dict(datasets=["cifar10"]),
}


def test_every_notebook_has_smoke_parameters():
    assert {p.stem for p in NOTEBOOKS} == set(SMOKE_PARAMETERS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_sources_are_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell["outputs"] and cell["execution_count"] is None, f"{path.name}: strip outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_a_parameters_cell(path):
    nb = json.loads(path.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1


BOOK_TAGS = {"hide-input", "remove-input", "remove-cell"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_is_folded_in_the_book(path):
    """The book shows prose and results: every code cell is folded or removed there (Jupyter shows all)."""
    nb = json.loads(path.read_text())
    open_cells = [
        c["source"][:1]
        for c in nb["cells"]
        if c["cell_type"] == "code" and not BOOK_TAGS & set(c.get("metadata", {}).get("tags", []))
    ]
    assert not open_cells, f"{path.name}: tag these hide-input or remove-input: {open_cells}"


@pytest.mark.parametrize("name", sorted(SMOKE_PARAMETERS))
def test_smoke_run_executes_and_reruns_identically(name, tmp_path):
    executed = tmp_path / f"{name}.ipynb"
    parameters = dict(SMOKE_PARAMETERS[name])
    if "runs_dir" in notebook_parameters(name):
        parameters["runs_dir"] = str(tmp_path / "runs")
    papermill.execute_notebook(
        str(ROOT / "notebooks" / f"{name}.ipynb"),
        str(executed),
        parameters=parameters,
        cwd=str(tmp_path),
        kernel_name="python3",
        progress_bar=False,
    )
    nb = json.loads(executed.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    # nbval re-executes the notebook and compares every output with the stored one, except
    # cells tagged nbval-ignore-output (the run record, with its dates and wall time).
    rerun = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval",
            str(executed),
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    # The re-run found every run in the store and did not train again.
    records = list((tmp_path / "runs").glob("*/record.json"))
    assert bool(records) == bool(parameters.get("train_missing") or parameters.get("smoke_run"))
    for record in records:
        assert len(json.loads(record.read_text())["sessions"]) == 1


def notebook_parameters(name: str) -> str:
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    return next("".join(c["source"]) for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))


def test_real_data_chapters_show_no_smoke_runs(tmp_path):
    """A smoke run in the store must not reach the book's tables (kind="real")."""
    parameters = dict(REAL_DATA_SMOKE, runs_dir=str(tmp_path / "runs"), rows=["vanilla"], scales=["paper"])
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "real_data.ipynb"),
        str(tmp_path / "smoke.ipynb"),
        parameters=parameters,
        kernel_name="python3",
        progress_bar=False,
    )
    assert list((tmp_path / "runs").glob("*-smoke-*/metrics.json"))  # the smoke run exists and is complete
    book_view = dict(runs_dir=str(tmp_path / "runs"), rows=["vanilla"], extra_rows=[], progress=False)
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "real_data.ipynb"),
        str(tmp_path / "book.ipynb"),
        parameters=book_view,
        kernel_name="python3",
        progress_bar=False,
    )
    text = (tmp_path / "book.ipynb").read_text()
    assert text.count("No real run of the CIFAR-10 experiments exists at the") >= 2  # one per scale
    assert "not run" in text


def test_gradient_masking_chapter_shows_no_smoke_runs(tmp_path):
    """Smoke evaluations in the store must not reach the chapter's real view, which says nothing was evaluated."""
    runs = str(tmp_path / "runs")
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "gradient_masking.ipynb"),
        str(tmp_path / "smoke.ipynb"),
        parameters=dict(runs_dir=runs, smoke_run=True, kind="smoke"),
        kernel_name="python3",
        progress_bar=False,
    )
    smoke = (tmp_path / "smoke.ipynb").read_text()
    assert "smoke runs on random images" in smoke and "reaches-zero" in smoke and "CIFAR-10 vanilla" in smoke
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "gradient_masking.ipynb"),
        str(tmp_path / "book.ipynb"),
        parameters=dict(runs_dir=runs),
        kernel_name="python3",
        progress_bar=False,
    )
    text = (tmp_path / "book.ipynb").read_text()
    assert "No real run has been evaluated yet" in text
    assert "CIFAR-10 vanilla" not in text  # no smoke run's row


def test_the_toy_notebook_offers_every_toy_knob():
    """The toy chapter builds its ToyConfig from its parameters: each field must be one of them."""
    from dataclasses import fields

    from pagcore.toy.problem import ToyConfig

    parameters = notebook_parameters("toy_manifold")
    missing = [f.name for f in fields(ToyConfig) if f"\n{f.name} =" not in "\n" + parameters]
    assert not missing, f"toy_manifold.ipynb's parameters cell lacks {missing}"


def test_real_cpu_scale_training_waits_for_a_final_preset(tmp_path, monkeypatch):
    """Asking a chapter to train real runs at a provisional preset fails at once, before any data is read."""
    from pagcore import config as cfg
    from pagcore.base.validation import ConfigError
    from pagcore.orchestrate.queue import chapter_runs

    monkeypatch.setitem(
        cfg.SCALES["cpu"], "cifar10", cfg.ScalePreset(8, 1, 2, 3, final=False, note="awaiting its pilot")
    )
    with pytest.raises(ConfigError, match="provisional"):
        chapter_runs(
            "cifar10",
            {"vanilla": ("vanilla", {})},
            knobs={"scale": "cpu"},
            runs_dir=str(tmp_path),
            train_missing=True,
            data=str(tmp_path / "no-such.npz"),
        )


MARKDOWN_RECORD = "application/papermill.record/text/markdown"
PLAIN_RECORD = "application/papermill.record/text/plain"
EXECUTED = sorted((ROOT / "book").rglob("*.ipynb"))
TABLE_GLUE = re.compile(r"(````|::::)\{table\}.*?```\{glue:md\} (\S+).*?\1", re.DOTALL)


def glued_markdown(notebook) -> dict[str, str]:
    return {
        output["metadata"]["scrapbook"]["name"]: "".join(output["data"].get(MARKDOWN_RECORD, ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "scrapbook" in output.get("metadata", {})
    }


@pytest.mark.parametrize("path", EXECUTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_glued_table_is_exactly_one_table(path):
    # The table directive refuses anything but one table, and the stored runs decide what is
    # glued: an empty state has to be a table too, or the warnings-as-errors build fails.
    notebook = nbformat.read(path, as_version=4)
    glued = glued_markdown(notebook)
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        for _, name in TABLE_GLUE.findall(cell.source):
            lines = glued.get(name, "").strip().splitlines()
            assert lines, f"{name} is glued inside a table but its notebook stores no markdown for it"
            assert all(line.startswith("|") for line in lines), f"{name} is not one table:\n{glued[name]}"


def _executor():
    spec = importlib.util.spec_from_file_location("execute_notebooks", ROOT / "tools" / "execute_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXECUTOR = _executor()


@pytest.mark.parametrize("name", sorted(EXECUTOR.BOOK_NOTEBOOKS))
def test_every_executed_chapter_was_run_from_its_current_source(name):
    # A chapter executed from an older source shows what that source computed, not what the code now
    # says: re-run `python tools/execute_notebooks.py NAME` after changing a notebook.
    target, _ = EXECUTOR.BOOK_NOTEBOOKS[name]
    source, intro = EXECUTOR.SHARED_SOURCES.get(name, (name, None))

    def cells(notebook, kinds):
        return [
            cell.source
            for cell in notebook.cells
            if cell.cell_type in kinds and "injected-parameters" not in cell.metadata.get("tags", [])
        ]

    # A chapter made from a shared source has its own introduction and filled-in markdown: compare code.
    kinds = ("code",) if intro else ("code", "markdown")
    executed = nbformat.read(ROOT / target, as_version=4)
    expected = nbformat.read(ROOT / "notebooks" / f"{source}.ipynb", as_version=4)
    assert cells(executed, kinds) == cells(expected, kinds), f"python tools/execute_notebooks.py {name}"


BACKTICK_FENCE = re.compile(r"^`{3,}([^`].*)$")


def _markdown_sources():
    for path in NOTEBOOKS:
        for number, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type == "markdown":
                yield f"{path.name} cell {number}", cell.source
    for path in sorted((ROOT / "book").rglob("*.md")):
        yield str(path.relative_to(ROOT)), path.read_text()


def test_no_backtick_fence_carries_a_role_in_its_line():
    # CommonMark ends a backtick fence's info string at no backtick: it refuses one that holds any, so a
    # directive line with a {ref} in its caption opens no directive, and the text below it turns into a
    # code block. Such a directive takes a colon fence (::::{table} ...).
    offending = [
        f"{where}: {line[:80]}"
        for where, source in _markdown_sources()
        for line in source.splitlines()
        if (match := BACKTICK_FENCE.match(line)) and "`" in match.group(1)
    ]
    assert not offending, offending


TEXT_ROLE = re.compile(r"\{glue(?::text)?\}`([^`:]+)")


@pytest.mark.parametrize("path", EXECUTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_plain_text_glue_carries_no_markup(path):
    # {glue:text} pastes text as it is: code or emphasis in it would show as raw backticks and
    # asterisks. Prose with markup is glued as Markdown and pasted with {glue:md}.
    notebook = nbformat.read(path, as_version=4)
    pasted = {
        name for cell in notebook.cells if cell.cell_type == "markdown" for name in TEXT_ROLE.findall(cell.source)
    }
    plain = {
        output["metadata"]["scrapbook"]["name"]: "".join(output["data"].get(PLAIN_RECORD, ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "scrapbook" in output.get("metadata", {})
    }
    marked = {name: plain[name][:80] for name in pasted & set(plain) if "`" in plain[name] or "**" in plain[name]}
    assert not marked, marked
