"""The README's engine example really runs."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def engine_example() -> str:
    """The python code block under the "## The engine" heading."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## The engine\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "expected one python block under '## The engine'"
    return blocks[0]


def test_the_engine_example_runs_and_learns():
    out = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(engine_example(), str(README), "exec"), namespace)
    printed = out.getvalue()
    accuracy = re.search(r"accuracy (\d\.\d+)", printed)
    assert accuracy and float(accuracy.group(1)) >= 0.95, printed
    assert "hidden/kernel" in printed


def test_every_picture_the_readmes_show_exists():
    root = README.parent
    for readme in (README, root / "experiments" / "README.md", root / "benchmarks" / "README.md"):
        for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme.read_text(encoding="utf-8")):
            picture = (readme.parent / target).resolve()
            assert picture.is_file() and picture.stat().st_size > 10_000, (readme, target)
    assert "docs/tensorboard_quickstart.png" in README.read_text(encoding="utf-8")
