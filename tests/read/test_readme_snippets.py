"""The README's reading snippets run as written on a 3x3 run (the preview preset's grid)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _snippet(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    after = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", after, re.DOTALL)[1]


@pytest.mark.render
def test_h5py_snippet_reads_the_centre_of_any_grid(generated, monkeypatch):
    import numpy as np

    code = _snippet("**Reading a shard with h5py:**")
    monkeypatch.chdir(generated.parent)
    scope: dict = {}
    exec(compile(code.replace("clevr-remv-data/", f"{generated.name}/"), "README", "exec"), scope)
    assert (scope["u"], scope["v"]) == (1, 1)
    assert scope["image"].shape == (64, 96, 3) and scope["mask"].dtype == np.bool_
    assert scope["mask"].any(), "the first expression's target shows in the central view"
