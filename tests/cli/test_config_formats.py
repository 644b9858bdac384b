"""Config files are read by extension (.json, .toml); YAML and other files get one line that
says what is read."""

import json

import pytest
from conftest import listing, run_cli

from clevr_remv import config
from clevr_remv.errors import UsageError


def test_json_and_toml_are_read_by_extension(tmp_path):
    j = tmp_path / "a.JSON"
    j.write_text(json.dumps({"render": {"samples": 7}}))
    t = tmp_path / "b.toml"
    t.write_text("[render]\nsamples = 7\n")
    assert config.load_config(str(j))["render"]["samples"] == 7
    assert config.load_config(str(t))["render"]["samples"] == 7
    broken = tmp_path / "c.toml"
    broken.write_text("[render\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        config.load_config(str(broken))


@pytest.mark.parametrize("name, content, mention", [
    ("settings.yaml", "render:\n  samples: 7\n", "is YAML, which is not read; write the same settings as JSON (.json) or TOML (.toml)"),
    ("settings.yml", "render:\n  samples: 7\n", "is YAML, which is not read"),
    ("settings.cfg", "[render]\nsamples = 7\n", "has extension '.cfg'; configs are read by extension: .json (JSON) or .toml (TOML)"),
    ("settings", "{}", "has no extension; configs are read by extension: .json (JSON) or .toml (TOML)"),
])
def test_other_files_get_one_line_naming_what_is_read(tmp_path, name, content, mention):
    path = tmp_path / name
    path.write_text(content)
    out = tmp_path / "out"
    r = run_cli("generate", "--scenes", 1, "--out", out, "--config", path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert mention in r.stderr
    assert listing(out) == []
