"""The dataset tools: stats, preview, validate (browse: test_browse_chromium.py).

The render-marked tests read the session's real tiny dataset (conftest ``generated``: 6
scenes, 3x3 views at 96x64); validate's tests corrupt copies of it with h5py.
"""

import json
import os
import shutil

import h5py
import numpy as np
import pytest
from conftest import listing, run_cli
from PIL import Image

from clevr_remv.errors import UsageError
from clevr_remv.language.templates import word_count
from clevr_remv.store import files, shards
from clevr_remv.tools.browse import overlay_strips, parse_scenes
from clevr_remv.tools.preview import highlight, outline, overlay_masks


# -- pure helpers (no render) ---------------------------------------------------------------
def test_overlay_changes_object_pixels_only():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (8, 10, 3), dtype=np.uint8)
    ids = np.zeros((8, 10), np.uint8)
    ids[2:5, 3:7] = 2
    out = overlay_masks(rgb, ids)
    assert np.array_equal(out[ids == 0], rgb[ids == 0])
    assert (out[ids == 2] != rgb[ids == 2]).any(axis=-1).all()


def test_outline_and_highlight():
    m = np.zeros((7, 7), bool)
    m[1:6, 1:6] = True
    o = outline(m)
    assert o.sum() == 16 and not o[3, 3] and o[1, 1]
    rgb = np.full((7, 7, 3), 200, np.uint8)
    out = highlight(rgb, m)
    assert (out[0, 0] < 100).all() and tuple(out[1, 1]) == (255, 230, 0) and (out[3, 3] == 200).all()


def test_overlay_strips_layout():
    ids = np.zeros((4, 5), np.uint8)
    ids[1, 1] = 1
    ids[2, 3] = 2
    s = overlay_strips(ids, 2)
    assert s.shape == (20, 5, 4)  # masks, two targets, two anchors
    assert s[1, 1, 3] > 0 and s[0, 0, 3] == 0                  # strip 0: masks only on objects
    assert tuple(s[4 + 1, 1]) == (255, 230, 0, 255)            # strip 1: object 0 outlined
    assert s[4 + 2, 3, 3] == 150 and s[8 + 2, 3, :3].tolist() == [255, 230, 0]  # others dimmed
    assert tuple(s[12 + 1, 1]) == (0, 220, 255, 255) and s[12:16, :, 3].sum() == 255  # anchor 0 outlined
    assert tuple(s[16 + 2, 3]) == (0, 220, 255, 255) and s[16 + 1, 1, 3] == 0          # anchor 1 only


def test_parse_scenes():
    assert parse_scenes(None, [0, 1, 2]) == [0, 1, 2]
    assert parse_scenes(None, list(range(300))) == list(range(100))
    assert parse_scenes("all", list(range(300))) == list(range(300))
    assert parse_scenes("0-1,2", [0, 1, 2, 3]) == [0, 1, 2]
    with pytest.raises(UsageError):
        parse_scenes("7", [0, 1])
    with pytest.raises(UsageError):
        parse_scenes("a-b", [0, 1])


@pytest.mark.parametrize("args, needle", [
    (["stats", "/nonexistent/x"], "does not exist"),
    (["validate", "/nonexistent/x"], "does not exist"),
    (["preview", "/nonexistent/x", "--scene", "0"], "does not exist"),
    (["browse", "/nonexistent/x", "--out", "/tmp/never-written-site"], "does not exist"),
])
def test_missing_folder_is_one_line_exit_2(args, needle):
    r = run_cli(*args)
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("cmd", [["stats"], ["validate"], ["preview", "--scene", "0"]])
def test_folder_without_manifest_is_refused(tmp_path, cmd):
    r = run_cli(cmd[0], tmp_path, *cmd[1:])
    assert r.returncode == 2 and "no manifest.json" in r.stderr and "Traceback" not in r.stderr


# -- on the real tiny dataset -----------------------------------------------------------------


def _truth(root):
    """Figures computed here, straight from the shards, to compare stats against."""
    m = files.read_json(root / "manifest.json")
    out = {}
    for e in m["shards"]:
        s = out.setdefault(e["split"], {"scenes": 0, "pairs": 0, "objects": [], "words": [], "rel": 0,
                                        "views": 0, "bad": 0})
        with h5py.File(root / e["path"], "r") as f:
            scenes = [json.loads(x) for x in f["scenes"].asstr()[()]]
            rows = f["refexps/scene"][()]
            texts = f["refexps/text"].asstr()[()]
            vv = f["refexps/valid_views"][()]
            s["scenes"] += len(scenes)
            s["pairs"] += len(rows)
            s["objects"] += [len(scenes[r]["objects"]) for r in rows]
            s["words"] += [word_count(t) for t in texts]
            s["rel"] += int((f["refexps/num_relations"][()] > 0).sum())
            s["views"] += vv.size
            s["bad"] += int((~vv).sum())
    return out


@pytest.mark.render
def test_stats_json_matches_the_shards(generated, tmp_path):
    r = run_cli("stats", generated, "--json", "--plots", tmp_path / "plots")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    truth = _truth(generated)
    assert set(s["splits"]) == {"train", "val", "test"}
    for name, t in truth.items():
        fig = s["splits"][name]
        assert fig["scenes"] == t["scenes"] and fig["pairs"] == t["pairs"]
        assert fig["objects_per_pair"] == pytest.approx(np.mean(t["objects"]))
        assert fig["words_per_expression"] == pytest.approx(np.mean(t["words"]))
        assert sum(fig["words_per_expression_histogram"].values()) == t["pairs"]
        assert fig["relation_share"] == pytest.approx(t["rel"] / t["pairs"])
        assert fig["view_pairs"] == t["views"] and fig["view_pairs_not_valid"] == t["bad"]
        assert (fig["not_valid_target_hidden"] + fig["not_valid_anchor_hidden"]
                + fig["not_valid_predicate"]) == t["bad"]
        assert sum(fig["families"].values()) == t["pairs"]
        share = {"train": 7000, "val": 1500, "test": 1500}[name]
        assert fig["pairs_at_10000_scenes"] == round(t["pairs"] / t["scenes"] * share)
        assert fig["source"]["pairs"] == {"train": 55966, "val": 11989, "test": 11994}[name]
    assert s["all"]["pairs"] == sum(t["pairs"] for t in truth.values())
    for name in ("train", "val", "test", "all"):
        im = Image.open(tmp_path / "plots" / f"stats-{name}.png")
        assert im.size[0] >= 800 and im.size[1] >= 300


@pytest.mark.render
def test_stats_table_prints_the_source_beside_ours(generated):
    r = run_cli("stats", generated)
    assert r.returncode == 0, r.stderr
    for needle in ("55,966", "8.0175", "6.529", "11,994", "< 0.1%", "extrapolated to 10,000 scenes",
                   "(expression, view) pairs not valid", "family mix"):
        assert needle in r.stdout


@pytest.mark.render
def test_stats_plots_into_a_file_is_refused(generated, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = run_cli("stats", generated, "--plots", f)
    assert r.returncode == 2 and "is a file" in r.stderr


@pytest.mark.render
def test_preview_writes_png_and_sweep(generated, tmp_path):
    out = tmp_path / "p.png"
    r = run_cli("preview", generated, "--scene", 4, "--out", out)
    assert r.returncode == 0, r.stderr
    png = Image.open(out)
    assert png.format == "PNG" and png.size[0] >= 3 * 96
    gif = Image.open(tmp_path / "p.gif")
    assert gif.n_frames == 9  # every view of the 3x3 grid once
    frames = []
    for k in range(gif.n_frames):
        gif.seek(k)
        frames.append(np.asarray(gif.convert("RGB"), np.int16))
    assert all(np.abs(a - b).mean() > 0.5 for a, b in zip(frames, frames[1:])), "views differ (parallax)"
    assert listing(tmp_path) == ["p.gif", "p.png"]


@pytest.mark.render
@pytest.mark.parametrize("args, needle", [
    (["--scene", 999], "scene 999 is not in a finished shard"),
    (["--scene", 0, "--out", "{tmp}"], "is a folder"),
    (["--scene", 0, "--out", "{tmp}/x.jpg"], "must end in .png"),
])
def test_preview_bad_input(generated, tmp_path, args, needle):
    args = [str(a).replace("{tmp}", str(tmp_path)) for a in args]
    r = run_cli("preview", generated, *args)
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert listing(tmp_path) == []


@pytest.mark.render
def test_browse_refuses_a_file_and_a_foreign_folder(generated, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    r = run_cli("browse", generated, "--out", f)
    assert r.returncode == 2 and "is a file" in r.stderr
    d = tmp_path / "d"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    r = run_cli("browse", generated, "--out", d)
    assert r.returncode == 2 and "holds other files" in r.stderr
    assert listing(d) == ["notes.txt"]
    r = run_cli("browse", generated, "--out", tmp_path / "s", "--scenes", "77")
    assert r.returncode == 2 and "scene 77" in r.stderr and not (tmp_path / "s").exists()


# -- validate ---------------------------------------------------------------------------------
@pytest.fixture
def copy(generated, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(generated, dst)
    return dst


def _reseal(root):
    """Rewrite the manifest's checksums to match the files: a shard corrupted while it was
    written carries a matching checksum, so only reading the data can catch it."""
    path = root / "manifest.json"
    m = files.read_json(path)
    for e in m["shards"]:
        e["sha256"] = shards.sha256_file(root / e["path"])
        e["bytes"] = (root / e["path"]).stat().st_size
    files.write_json_atomic(path, m)


def _validate(root):
    r = run_cli("validate", root)
    lines = [x for x in r.stdout.splitlines() if x.startswith("VIOLATION")]
    return r, lines


@pytest.mark.render
def test_validate_passes_a_sound_dataset(generated):
    r, lines = _validate(generated)
    assert r.returncode == 0, r.stdout + r.stderr
    assert lines == [] and "no violations" in r.stderr
    assert r.stderr.count("validate: [") == 4  # a progress line per shard


SHARD = "train/train-00001.h5"  # scenes 2 and 3


def _pick_expression(f):
    """An expression of scene row 0 whose target shows in view (1, 0)."""
    for i in range(f["refexps/scene"].shape[0]):
        if f["refexps/scene"][i] == 0 and f["refexps/valid_views"][i, 1, 0]:
            return i
    raise AssertionError("no expression valid in view (1, 0)")


def _corrupt_program(f):
    i = _pick_expression(f)
    n = len(json.loads(f["scenes"][0])["objects"])
    f["refexps/object"][i] = (f["refexps/object"][i] + 1) % n
    k = int(sum(1 for j in range(i) if f["refexps/scene"][j] == 0))
    return "program", f"scene 2, expression 2-{k}: program picks"


def _corrupt_visible(f):
    f["visible_pixels"][1, 2, 1, 0] += 5
    return "visible_pixels", "scene 3, view (2,1): object 0: stored"


def _corrupt_valid(f):
    i = _pick_expression(f)
    f["refexps/valid_views"][i, 1, 0] = False
    return "valid_views", "view (1,0), expression 2-"


def _corrupt_camera(f):
    f["cameras/intrinsics"][0, 0, 2, 0, 2] += 0.5
    return "camera", "scene 2, view (0,2): intrinsics differs"


def _corrupt_depth(f):
    ids = f["instances"][1, 1, 1]
    depth = f["depth"][1, 1, 1]
    ys, xs = np.nonzero(ids)
    depth[ys[:3], xs[:3]] = np.inf
    f["depth"][1, 1, 1] = depth
    return "ids_without_depth", "scene 3, view (1,1): 3 pixel(s) carry an object id"


def _corrupt_ids(f):
    ids = f["instances"][0, 2, 2]
    depth = f["depth"][0, 2, 2]
    ys, xs = np.nonzero((ids == 0) & np.isfinite(depth))
    ids[ys[0], xs[0]] = 250
    f["instances"][0, 2, 2] = ids
    return "instance_ids", "scene 2, view (2,2): instance id 250 but the scene has"


def _corrupt_record(f):
    rec = json.loads(f["scenes"][1])
    rec["index"] = 99
    f["scenes"][1] = json.dumps(rec)
    return "scene_record", "scene 3: scene record says index 99"


def _corrupt_dtype(f):
    data = f["visible_pixels"][()]
    del f["visible_pixels"]
    f.create_dataset("visible_pixels", data=data.astype(np.int16))
    return "structure", "visible_pixels has dtype int16"


def _corrupt_chunk(f):
    ds = f["images"]
    info = ds.id.get_chunk_info_by_coord((1, 0, 1, 0, 0, 0))
    f.flush()
    return ("unreadable", "scene 3, view (0,1): images does not decompress"), info


CORRUPTIONS = [_corrupt_program, _corrupt_visible, _corrupt_valid, _corrupt_camera, _corrupt_depth, _corrupt_ids,
               _corrupt_record, _corrupt_dtype]


@pytest.mark.render
@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda c: c.__name__[9:])
def test_validate_catches_each_corruption(copy, corrupt):
    with h5py.File(copy / SHARD, "r+") as f:
        kind, place = corrupt(f)
    _reseal(copy)
    r, lines = _validate(copy)
    assert r.returncode == 1, r.stdout + r.stderr
    assert lines and all(f"VIOLATION {kind}: shard {SHARD}" in x for x in lines), lines
    assert any(place in x for x in lines), lines
    assert SHARD in r.stderr.splitlines()[-1]


@pytest.mark.render
def test_validate_catches_a_chunk_that_does_not_decompress(copy):
    with h5py.File(copy / SHARD, "r+") as f:
        (kind, place), info = _corrupt_chunk(f)
    with open(copy / SHARD, "r+b") as fh:  # garble the middle of the compressed chunk
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(b"\xff" * min(64, info.size // 2))
    _reseal(copy)
    r, lines = _validate(copy)
    assert r.returncode == 1 and any(place in x for x in lines), r.stdout + r.stderr


@pytest.mark.render
def test_validate_checks_split_sizes_and_checksums(copy):
    m = files.read_json(copy / "manifest.json")
    m["splits"]["val"]["scene_range"] = [4, 6]
    m["splits"]["test"]["scene_range"] = [6, 7]
    m["shards"][0]["sha256"] = "0" * 64
    files.write_json_atomic(copy / "manifest.json", m)
    r, lines = _validate(copy)
    assert r.returncode == 1
    text = "\n".join(lines)
    assert "VIOLATION split: shard test/test-00000.h5: scene range 5-5 lies outside split test's 6-6" in text
    assert "split val should hold scenes 4-5 (2) but its finished shards hold 1" in text
    assert "VIOLATION checksum: shard train/train-00000.h5" in text


@pytest.mark.render
def test_stats_counts_expressions_the_generator_dropped(copy):
    """Scene records that say how many expressions the drop rule removed are summed per split."""
    with h5py.File(copy / "train/train-00000.h5", "r+") as f:
        for row, n in ((0, 2), (1, 1)):
            rec = json.loads(f["scenes"][row])
            rec["expressions"] = {"when_hidden": "drop_expression", "dropped_hidden": n}
            f["scenes"][row] = json.dumps(rec)
    # A dataset made before the drop rule existed: its records carry no count at all.
    with h5py.File(copy / "val/val-00000.h5", "r+") as f:
        for row in range(f["scenes"].shape[0]):
            rec = json.loads(f["scenes"][row])
            rec.pop("expressions", None)
            f["scenes"][row] = json.dumps(rec)
    r = run_cli("stats", copy, "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    train = s["splits"]["train"]
    assert train["expressions_dropped_hidden"] == 3
    assert train["expressions_dropped_hidden_share"] == pytest.approx(3 / (train["pairs"] + 3))
    assert s["splits"]["val"]["expressions_dropped_hidden"] is None  # its records do not say


def _garble_json(copy):
    with h5py.File(copy / SHARD, "r+") as f:
        f["scenes"][1] = '{"index": 3, "objects": [tru'  # scene 3's record, cut short


def _garble_chunk(copy):
    with h5py.File(copy / SHARD, "r+") as f:
        _, info = _corrupt_chunk(f)  # scene 3, view (0,1) of images
    with open(copy / SHARD, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(b"\xff" * min(64, info.size // 2))


@pytest.mark.render
@pytest.mark.parametrize("damage, command", [
    (_garble_json, "stats"), (_garble_json, "preview"), (_garble_json, "browse"),
    (_garble_chunk, "preview"), (_garble_chunk, "browse"),
], ids=lambda x: x if isinstance(x, str) else x.__name__[8:])
def test_a_damaged_shard_is_one_line_naming_it(copy, tmp_path, damage, command):
    damage(copy)
    _reseal(copy)  # damaged before its checksum was taken: only reading it shows the damage
    out = tmp_path / "result"
    args = {"stats": ["--plots", out], "preview": ["--scene", 3, "--out", out / "s.png"],
            "browse": ["--scenes", 3, "--out", out]}[command]
    if command == "preview":
        out.mkdir()
    r = run_cli(command, copy, *args)
    assert r.returncode == 1, r.stdout + r.stderr  # the exit code of a CorruptShardError
    assert r.stderr.count("\n") == 1 and "internal error" not in r.stderr, r.stderr
    assert f"shard '{copy / SHARD}' is damaged" in r.stderr
    assert listing(out) == [], "nothing half-written"


@pytest.mark.render
def test_stats_plots_where_no_folder_can_be_made_is_refused_before_the_work(generated, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = run_cli("stats", generated, "--plots", f / "plots")  # fails as root too
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "cannot be created" in r.stderr and r.stdout == ""
    if os.geteuid() == 0:
        return  # root writes into a 0o500 folder: the rest cannot fail
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    for args, out in ((["stats", generated, "--plots", locked / "plots"], locked / "plots"),
                      (["preview", generated, "--scene", 0, "--out", locked / "p.png"], locked / "p.png"),
                      (["browse", generated, "--out", locked / "site"], locked / "site")):
        r = run_cli(*args)
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and f"cannot write to '{locked}'" in r.stderr, r.stderr
        assert r.stdout == "" and not out.exists()


@pytest.mark.render
@pytest.mark.parametrize("field, value", [("split", "val"), ("path", "val/train-00001.h5")])
def test_validate_refuses_a_shard_outside_its_split_before_reading(copy, field, value):
    # A shard entry whose split or folder disagrees: the manifest itself is refused (one line,
    # exit 2), so validate's split checks never see such an entry.
    m = files.read_json(copy / "manifest.json")
    m["shards"][1][field] = value
    files.write_json_atomic(copy / "manifest.json", m)
    r = run_cli("validate", copy)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "is not <split>/<split>-NNNNN.h5 of a known split" in r.stderr


def test_stats_plots_have_integer_count_ticks_and_the_legend_outside():
    from clevr_remv.tools.stats import draw_plots

    fig = {"pairs": 2, "objects_per_pair_histogram": {"4": 2}, "objects_per_pair": 4.0,
           "words_per_expression_histogram": {"5": 1, "7": 1}, "words_per_expression": 6.0,
           "source": {"objects_per_pair": 6.495, "words_per_expression": 8.042}}
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    f = draw_plots("val", fig)
    canvas = FigureCanvasAgg(f)
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in f.axes:
        ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        legend = ax.get_legend().get_window_extent(renderer)
        assert not legend.overlaps(ax.get_window_extent(renderer)), "the legend covers the plot"
        assert legend.y1 <= ax.get_window_extent(renderer).y0
        assert f.bbox.contains(legend.x0, legend.y0) and f.bbox.contains(legend.x1, legend.y1)
