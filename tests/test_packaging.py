"""The installed package is the checkout's: every subpackage is listed in pyproject.toml.

setuptools installs only the packages listed under [tool.setuptools] packages, so a
subpackage left out works in the checkout (and in an editable install) but is missing from
`pip install .`, a wheel, or a container image."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "clevr_remv").rglob("__init__.py")}
    assert found, "no package found under clevr_remv/"
    assert sorted(found - listed) == [], "add these to [tool.setuptools] packages in pyproject.toml"
