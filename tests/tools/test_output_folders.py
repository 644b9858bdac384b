"""Every tool that writes to --out creates the missing folders above it, as generate, export,
stats --plots and evaluate --report do; a parent that is a file is still refused."""

import pytest
from conftest import listing, run_cli


@pytest.mark.render
@pytest.mark.parametrize("args, made", [
    (["preview", "{root}", "--scene", 0, "--out", "{tmp}/no/such/x.png"], ["no/such/x.gif", "no/such/x.png"]),
    (["baseline", "{root}", "{tmp}/no/such/b.h5"], ["no/such/b.h5"]),
    (["browse", "{root}", "--out", "{tmp}/no/such/site", "--scenes", "0"], ["no/such/site/index.html"]),
])
def test_missing_parent_folders_are_created(generated, tmp_path, args, made):
    args = [str(a).replace("{tmp}", str(tmp_path)).replace("{root}", str(generated)) for a in args]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    have = listing(tmp_path)
    assert all(m in have for m in made), have


@pytest.mark.render
@pytest.mark.parametrize("args", [
    ["preview", "{root}", "--scene", 0, "--out", "{tmp}/f/x.png"],
    ["baseline", "{root}", "{tmp}/f/b.h5"],
    ["browse", "{root}", "--out", "{tmp}/f/site"],
])
def test_a_file_in_the_way_is_refused(generated, tmp_path, args):
    (tmp_path / "f").write_text("x")
    args = [str(a).replace("{tmp}", str(tmp_path)).replace("{root}", str(generated)) for a in args]
    r = run_cli(*args)
    assert r.returncode == 2 and "is a file" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert listing(tmp_path) == ["f"]
