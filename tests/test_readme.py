"""Every code block of README.md runs, at tiny settings, on generated images (issue 26: a user copies them)."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.cli_examples import assert_ran, command_lines, run, tiny, write_inputs

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def code_blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced block, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", README.read_text(), flags=re.M | re.S)


def command_blocks() -> list[str]:
    return [text for lang, text in code_blocks()[1:] if lang == "bash"]


def python_blocks() -> list[str]:
    return [text for lang, text in code_blocks() if lang == "python"]


def run_block(text: str, where: Path) -> None:
    """Run a block's command lines in order in `where` (which holds the generated inputs)."""
    cwd = os.getcwd()
    os.chdir(where)
    try:
        for tokens in command_lines(text):
            assert_ran(run(tiny(tokens)), tokens)
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    """A folder where the README's first command block (fit, export, train, use) has run."""
    root = tmp_path_factory.mktemp("readme")
    write_inputs(root)
    run_block(command_blocks()[0], root)
    return root


def test_the_first_block_is_the_set_up_ci_runs():
    lang, text = code_blocks()[0]
    assert lang == "bash"
    first, second = text.splitlines()[:2]
    assert first.startswith("pip install -e '.[test]' && degrade demo")
    # .ci/run takes the first line with `pytest` in the first ```bash block, comment stripped, and runs it
    awk = r"awk '/^```bash/{inside=1; next} inside && /^```/{exit} inside && /pytest/{print; exit}' README.md"
    extracted = subprocess.run(awk, shell=True, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert extracted.strip() == second.strip()
    assert re.sub(r" *#.*$", "", second) == "pip install -e '.[test]' && pytest"


def test_every_block_is_one_this_file_runs():
    langs = [lang for lang, _ in code_blocks()]
    assert langs[0] == "bash" and set(langs[1:]) <= {"bash", "python"}, langs
    assert len(command_blocks()) >= 2 and len(python_blocks()) >= 2


def test_the_pipeline_block_writes_what_it_says(pipeline):
    assert (pipeline / "runs" / "deg" / "degrader.safetensors").is_file()
    assert (pipeline / "runs" / "deg" / "report.html").is_file()
    assert (pipeline / "shards" / "manifest.json").is_file()
    assert (pipeline / "runs" / "sr" / "sr.safetensors").is_file()
    assert len(list((pipeline / "upscaled").iterdir())) == 3  # photos/ holds 2, plus more.png
    assert (pipeline / "eval" / "report.html").is_file()


@pytest.mark.parametrize("index", range(1, len(command_blocks())))
def test_other_command_blocks(index, tmp_path):
    """Each further block (several GPUs: one process here) runs in a folder of its own."""
    text = command_blocks()[index].replace("/shared/", "")  # the shared filesystem of the two-node example
    write_inputs(tmp_path)
    run_block(text, tmp_path)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_python_blocks(index, pipeline, monkeypatch, capsys):
    """Each Python block runs as written, in the folder the pipeline block left, with fewer steps."""
    code = re.sub(r"\bsteps=\d[\d_]*", "steps=2", python_blocks()[index])
    monkeypatch.chdir(pipeline)
    namespace: dict = {"__name__": f"readme_block_{index}"}
    exec(compile(code, f"README.md, python block {index}", "exec"), namespace)
    if "sr" in namespace:  # the API block ends by upscaling the photo's LR
        assert tuple(namespace["sr"].shape) == (1, 3, 64, 64)
        assert (pipeline / "runs" / "deg-py" / "report.html").is_file()
    if "gt" in namespace:  # the shards block reads a batch
        assert tuple(namespace["gt"].shape) == (16, 3, 64, 64)


def test_the_figure_script_runs_on_generated_data(tmp_path):
    """examples/readme_figure.py needs no data: it fits on the demo's faces; one row per face, four columns."""
    main = runpy.run_path(str(ROOT / "examples" / "readme_figure.py"))["main"]
    one = main(["--steps", "2", "--n", "1", "--out", str(tmp_path / "one.png")])
    two = main(["--steps", "2", "--n", "2", "--out", str(tmp_path / "two.png")])
    with Image.open(one) as a, Image.open(two) as b:
        assert a.width == b.width >= 4 * 128  # HR, bicubic, learned, real LR: 128 px cells
        assert b.height - a.height >= 128  # a second row


def test_the_readme_shows_the_committed_figure():
    assert "](docs/figure.png)" in README.read_text()
    assert (ROOT / "docs" / "figure.png").stat().st_size < 300_000
