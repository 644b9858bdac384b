"""The run folder and the worker pool without Blender: a fake worker speaking the worker
interface renders synthetic arrays; everything else (plan, folder, shards, manifest,
expressions) is the real code."""

import json
import os

import h5py
import numpy as np
import pytest

from clevr_remv import config
from clevr_remv.errors import UsageError
from clevr_remv.render import devices
from clevr_remv.render.protocol import ViewEvent
from clevr_remv.run import plan
from clevr_remv.run.job import GenerateJob
from clevr_remv.store import files


class FakeWorker:
    """Implements the worker protocol (render.protocol.Worker); 'renders' each object of the
    scene as a vertical stripe."""

    renders: list = []        # (scene index, tag) of every render request, across instances
    fail_at: int | None = None  # raise (not a worker error) when asked to render this scene

    def __init__(self, cfg, slot, log_path, timeouts=None, denoiser=None):
        self.cfg = cfg
        self.name = f"worker-{slot}"
        self.pid = 10_000 + slot
        self.info = {"blender": "fake", "devices": {"cpu": ["CPU"]}}
        self.denoiser = denoiser
        self.timeouts = timeouts
        self.rendered = False
        self.settings = None
        self.scene = None
        self.closed = False

    def configure(self, settings):
        self.settings = settings
        return {"event": "configured", "device": "cpu", "names": ["CPU"]}

    def render(self, scene, views, tag, settings=None):
        if tag == "view" and scene["index"] == FakeWorker.fail_at:
            raise RuntimeError(f"fake failure at scene {scene['index']}")
        FakeWorker.renders.append((scene["index"], tag))
        self.scene = scene
        self.rendered = True
        for u, v in views:
            yield ViewEvent(u, v, f"{tag}_{u}_{v}", 0.0)
        return {"event": "done", "build_seconds": 0.0}

    def read_view(self, event, outputs, view=None):
        return synthetic(self.cfg, self.scene, event.u, event.v, [o if isinstance(o, str) else o.name for o in outputs])

    def meshes(self):  # a box for every shape (the amodal masks need some convex mesh)
        box = {"vertices": [[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)],
               "faces": [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]}
        return {shape: box for shape in ("cube", "sphere", "cylinder")}

    def close(self):
        self.closed = True

    kill = close

    def peak_rss_bytes(self):
        return 1

    rss_bytes = peak_rss_bytes


def synthetic(cfg, scene, u, v, names):
    h, w = cfg["render"]["height"], cfg["render"]["width"]
    n = len(scene["objects"])
    inst = np.zeros((h, w), np.uint8)
    for k in range(n):
        inst[:, (k + 1) * w // (n + 1):(k + 2) * w // (n + 1)] = k + 1
    seed = scene["index"] * 100 + u * 10 + v
    arrays = {"images": np.full((h, w, 3), seed % 256, np.uint8), "instances": inst,
              "depth": np.full((h, w), float(seed), np.float32),
              "normals": np.tile(np.array([0, 0, -1], np.float16), (h, w, 1))}
    return {k: arrays[k] for k in names}


@pytest.fixture
def cfg():
    return config.load_config(overrides={"rig.grid": 3, "render.width": 40, "render.height": 24,
                                         "output.shard_size": 2, "render.device": "cpu",
                                         # the fake worker's images are final: no driver denoising
                                         "render.denoiser": "cycles"})


@pytest.fixture(autouse=True)
def fresh_fake():
    FakeWorker.renders = []
    FakeWorker.fail_at = None
    yield


def job(out, cfg, scenes=6, seed=3, **kw):
    return GenerateJob(out, scenes, seed, cfg, workers=kw.pop("workers", 1), progress=False,
                       worker_factory=FakeWorker, **kw)


def rendered_scenes():
    return sorted(i for i, tag in FakeWorker.renders if tag == "view")


def test_a_fake_run_writes_every_shard_with_the_workers_arrays(tmp_path, cfg):
    m = job(tmp_path / "o", cfg).run()
    assert m["complete"] and [e["path"] for e in m["shards"]] == [
        "train/train-00000.h5", "train/train-00001.h5", "val/val-00000.h5", "test/test-00000.h5"]
    assert rendered_scenes() == list(range(6))
    with h5py.File(tmp_path / "o" / "train/train-00001.h5", "r") as f:
        for row, index in enumerate((2, 3)):
            scene = json.loads(f["scenes"][row])
            assert scene["index"] == index
            ref = synthetic(cfg, scene, 1, 2, ["images", "instances", "depth", "normals"])
            for name, arr in ref.items():
                assert np.array_equal(f[name][row, 1, 2], arr), name
    assert not (tmp_path / "o" / ".work").exists()


def test_recover_keeps_finished_scenes_and_removes_half_written_files(tmp_path, cfg):
    out = tmp_path / "o"
    FakeWorker.fail_at = 3
    with pytest.raises(RuntimeError, match="fake failure at scene 3"):
        job(out, cfg).run()
    # Scenes 0-1 made shard 0; scene 2 waits in .work; nothing of scene 3 is left.
    m = files.read_json(out / "manifest.json")
    assert [e["path"] for e in m["shards"]] == ["train/train-00000.h5"] and not m["complete"]
    assert sorted(p.name for p in (out / ".work").iterdir()) == ["scene-0000002.h5"]
    # A kill could leave half-written files: a scene and a shard under temporary names.
    (out / ".work" / "scene-0000004.h5.tmp").write_bytes(b"partial")
    (out / "val" / ".val-00000.h5.tmp").write_bytes(b"partial")
    FakeWorker.fail_at = None
    FakeWorker.renders = []
    m = job(out, cfg).run()
    assert m["complete"] and len(m["shards"]) == 4
    assert rendered_scenes() == [3, 4, 5], "finished scenes (0-2) are not rendered again"
    assert not (out / ".work").exists() and not (out / "val" / ".val-00000.h5.tmp").exists()
    with h5py.File(out / "train/train-00001.h5", "r") as f:
        assert [json.loads(s)["index"] for s in f["scenes"][()]] == [2, 3]


def test_adopt_a_shard_missing_from_the_manifest_and_drop_a_foreign_one(tmp_path, cfg):
    out = tmp_path / "o"
    first = job(out, cfg).run()
    sha = {e["path"]: e["sha256"] for e in first["shards"]}
    stats = {e["path"]: e["expression_stats"] for e in first["shards"]}
    m = files.read_json(out / "manifest.json")
    # Killed between the shard's rename and the manifest update: the shard is complete.
    m["shards"] = [e for e in m["shards"] if e["path"] != "val/val-00000.h5"]
    # And a file under a shard's name that is not one of this run's shards.
    m["shards"] = [e for e in m["shards"] if e["path"] != "test/test-00000.h5"]
    m["complete"] = False
    files.write_json_atomic(out / "manifest.json", m)
    (out / "test/test-00000.h5").write_bytes(b"not a shard")
    FakeWorker.renders = []
    again = job(out, cfg).run()
    assert again["complete"]
    assert rendered_scenes() == [5], "the adopted val shard is kept, the foreign test file re-rendered"
    assert {e["path"]: e["sha256"] for e in again["shards"]} == sha
    adopted = next(e for e in again["shards"] if e["path"] == "val/val-00000.h5")
    assert "objects" in adopted["expression_stats"], "the adopted shard's objects count towards the unseen share"
    assert {e["path"]: e["expression_stats"] for e in again["shards"]} == stats


def test_parts_render_disjoint_shards_into_one_folder(tmp_path, cfg):
    out = tmp_path / "o"
    m1 = job(out, cfg, part="1/2").run()
    first = rendered_scenes()
    FakeWorker.renders = []
    m2 = job(out, cfg, part="2/2").run()
    second = rendered_scenes()
    all_plans = plan.plan_shards(6, cfg["output"]["splits"], 2)
    assert [e["path"] for e in m1["shards"]] == [p.name for p in plan.select_part(all_plans, (1, 2))]
    assert [e["path"] for e in m2["shards"]] == [p.name for p in plan.select_part(all_plans, (2, 2))]
    assert sorted(first + second) == list(range(6)) and not set(first) & set(second)
    assert (out / "manifest.part-001-of-002.json").exists() and (out / "manifest.part-002-of-002.json").exists()
    assert m1["part"] == [1, 2] and m1["complete"] and m2["complete"]


def test_overwrite_replaces_a_run_with_other_settings_only_when_asked(tmp_path, cfg):
    out = tmp_path / "o"
    job(out, cfg, seed=3).run()
    before = files.read_json(out / "manifest.json")
    with pytest.raises(UsageError, match="holds a run with other settings"):
        job(out, cfg, seed=4).prepare()
    assert files.read_json(out / "manifest.json") == before, "a refused run changes nothing"
    (out / "logs" / "keep-me.txt").write_text("old log")
    FakeWorker.renders = []
    m = job(out, cfg, seed=4, overwrite=True).run()
    assert m["seed"] == 4 and m["config_digest"] != before["config_digest"] and m["complete"]
    assert rendered_scenes() == list(range(6))
    assert not (out / "logs" / "keep-me.txt").exists(), "the old run's logs went with it"
    # The same settings again with --overwrite: nothing to replace, nothing re-rendered.
    FakeWorker.renders = []
    job(out, cfg, seed=4, overwrite=True).run()
    assert rendered_scenes() == []


def test_two_workers_share_the_scenes_and_get_their_settings(tmp_path, cfg):
    seen = []

    class Recording(FakeWorker):
        def configure(self, settings):
            seen.append(settings)
            return super().configure(settings)

    m = GenerateJob(tmp_path / "o", 6, 1, cfg, workers=2, progress=False, worker_factory=Recording).run()
    assert m["complete"]
    slots = seen[1:]  # after the probe: one per slot
    assert all(s["passes"] == ["use_pass_normal", "use_pass_object_index", "use_pass_z"] for s in seen)
    assert all(s["threads"] >= 1 and s["device"] == "cpu" for s in slots)
    lines = [json.loads(x) for x in (tmp_path / "o" / "logs" / "scenes.jsonl").read_text().splitlines()]
    assert sorted(x["scene"] for x in lines) == list(range(6))
    assert {x["worker"] for x in lines} <= {"worker-0", "worker-1"}


def test_device_policy():
    devs = {"cpu": ["CPU"], "cuda": ["A", "B"], "optix": ["A", "B"]}
    assert devices.choose_device("auto", devs) == {"device": "optix", "names": ["A", "B"], "count": 2}
    assert devices.choose_device("auto", {"cpu": ["CPU"]})["device"] == "cpu"
    with pytest.raises(UsageError, match="device 'hip' is not available"):
        devices.choose_device("hip", devs)
    gpu = devices.choose_device("cuda", devs)
    assert devices.worker_count(None, gpu) == 2 and devices.worker_count(3, gpu) == 3
    assert devices.worker_count(None, {"device": "cpu", "count": 1}) == 1
    cfg = config.load_config()
    s = [devices.render_settings(cfg, gpu, slot, 2, ["use_pass_z"]) for slot in range(3)]
    assert [x["gpu_index"] for x in s] == [0, 1, 0] and s[0]["passes"] == ["use_pass_z"]
    cpu = devices.render_settings(cfg, {"device": "cpu"}, 0, 2, [], cpu_count=16)
    assert cpu["threads"] == 8 and "gpu_index" not in cpu


def test_pool_restarts_workers_and_retries_a_crashed_scene_once_on_a_new_one(tmp_path):
    from clevr_remv.errors import WorkerError

    cfg = config.load_config(overrides={"rig.grid": 3, "render.width": 40, "render.height": 24,
                                        "output.shard_size": 2, "render.device": "cpu",
                                        "workers.restart_every": 2, "render.denoiser": "cycles"})
    made = []

    class Crashy(FakeWorker):
        crashed = False

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

        def render(self, scene, views, tag, settings=None):
            if tag == "view" and scene["index"] == 3 and not Crashy.crashed:
                Crashy.crashed = True
                raise WorkerError("worker-0: Blender process ended unexpectedly (exit code -9)")
            return (yield from super().render(scene, views, tag, settings))

    m = GenerateJob(tmp_path / "o", 6, 1, cfg, workers=1, progress=False, worker_factory=Crashy).run()
    assert m["complete"] and rendered_scenes() == list(range(6))
    # The probe, then scenes (0, 1) (2, 3x) | retry: (3, 4) (5): a new worker per pair and per crash.
    assert len(made) == 1 + 4
    assert all(w.closed for w in made), "every worker was closed"
    lines = [json.loads(x) for x in (tmp_path / "o" / "logs" / "scenes.jsonl").read_text().splitlines()]
    assert [x["scene"] for x in lines] == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("tries", [None, 1, 5])
def test_a_scene_that_keeps_crashing_is_tried_workers_tries_times_then_stops_the_run(tmp_path, cfg, tries):
    """As many tries of the failing scene as workers.tries says, each on a new worker; the
    default is the one in scene_configs/default.json."""
    from clevr_remv.errors import WorkerError

    if tries is not None:
        cfg["workers"]["tries"] = tries
    from clevr_remv.resources import resource_dir
    expected = tries or json.loads((resource_dir("scene_configs") / "default.json").read_text())["workers"]["tries"]
    attempts = []

    class Broken(FakeWorker):
        def render(self, scene, views, tag, settings=None):
            if tag == "view" and scene["index"] == 1:
                attempts.append(self)
                raise WorkerError("worker-0: render failed")
            return (yield from super().render(scene, views, tag, settings))

    with pytest.raises(WorkerError, match=f"gave up after {expected} tries.*render failed"):
        GenerateJob(tmp_path / "o", 6, 1, cfg, workers=1, progress=False, worker_factory=Broken).run()
    assert len(attempts) == expected and len(set(map(id, attempts))) == expected, "each try on a new worker"
    assert not list((tmp_path / "o").rglob("*.tmp")), "no half-written scene left"


def test_workers_get_the_runs_timeouts_and_denoiser_when_made_and_speak_the_protocol(tmp_path, cfg):
    from clevr_remv.render.protocol import Worker

    made = []

    class Kept(FakeWorker):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

    j = GenerateJob(tmp_path / "o", 4, 1, cfg, workers=1, progress=False, worker_factory=Kept)
    j.run()
    assert len(made) >= 2 and all(w.timeouts is j.timeouts for w in made), "one shared ReplyTimeouts"
    assert all(w.denoiser is None for w in made), "Cycles denoises here: no driver denoiser"
    assert all(isinstance(w, Worker) for w in made)


# -- links planted in a run folder: nothing outside it is written, truncated or removed ----------

@pytest.mark.parametrize("lock, part, overwrite", [
    (".clevr-remv.lock", None, False),
    (".clevr-remv.lock", None, True),
    (".clevr-remv.part-001-of-002.lock", "1/2", False),
])
def test_a_link_at_a_lock_files_name_is_refused_and_its_target_untouched(tmp_path, cfg, lock, part, overwrite):
    out = tmp_path / "o"
    out.mkdir()
    victim = tmp_path / "bashrc"
    victim.write_text("alias ll='ls -l'\n")
    (out / lock).symlink_to(victim)
    dangling = tmp_path / "made-by-a-dangling-link"
    with pytest.raises(UsageError, match="symbolic link"):
        job(out, cfg, part=part, overwrite=overwrite).run()
    assert victim.read_text() == "alias ll='ls -l'\n", "not truncated, not written"
    (out / lock).unlink()
    (out / lock).symlink_to(dangling)
    with pytest.raises(UsageError, match="symbolic link"):
        job(out, cfg, part=part).run()
    assert not dangling.exists(), "a dangling link creates nothing"
    assert FakeWorker.renders == [], "refused before any render"


def test_a_foreign_file_at_the_lock_name_is_never_truncated(tmp_path, cfg):
    out = tmp_path / "o"
    job(out, cfg).run()
    lock = out / ".clevr-remv.lock"
    lock.unlink()
    victim = tmp_path / "thesis.tex"
    victim.write_text("chapter 1\n")
    os.link(victim, lock)  # a second name of a file of the user's
    job(out, cfg).run()
    assert victim.read_text() == "chapter 1\n"
    lock.unlink()
    lock.write_text("notes of mine\n")
    job(out, cfg).run()
    assert lock.read_text() == "notes of mine\n"


@pytest.mark.parametrize("name", [".work", "logs", "train"])
def test_resume_refuses_a_linked_folder_and_leaves_its_target_alone(tmp_path, cfg, name):
    out = tmp_path / "o"
    job(out, cfg).run()
    outside = tmp_path / "proj"
    outside.mkdir()
    keep = {"notes.tmp": b"draft", "scene-0000001.h5": b"not hdf5", "train-00000.h5": b"mine",
            "scenes.jsonl": b"{}\n"}
    for f, data in keep.items():
        (outside / f).write_bytes(data)
    target = out / name
    if target.exists():
        import shutil
        shutil.rmtree(target)
    target.symlink_to(outside, target_is_directory=True)
    with pytest.raises(UsageError, match="symbolic link"):
        job(out, cfg).run()
    assert {f: (outside / f).read_bytes() for f in keep} == keep, "nothing outside removed or written"


def test_resume_removes_a_linked_shard_or_log_as_a_link_only(tmp_path, cfg):
    out = tmp_path / "o"
    job(out, cfg).run()
    outside = tmp_path / "elsewhere.h5"
    outside.write_bytes(b"someone's file")
    shard = out / "train" / "train-00000.h5"
    shard.unlink()
    shard.symlink_to(outside)
    FakeWorker.renders = []
    m = job(out, cfg).run()
    assert m["complete"] and not shard.is_symlink() and outside.read_bytes() == b"someone's file"
    assert rendered_scenes() == [0, 1], "the shard was rendered again"
    log = out / "logs" / "scenes.jsonl"
    log.unlink()
    log.symlink_to(outside)
    with pytest.raises(UsageError, match="symbolic link"):
        job(out, cfg).run()
    assert outside.read_bytes() == b"someone's file", "no log appended outside"


class FakeGpuWorker(FakeWorker):
    """A worker whose Blender reports one CUDA GPU."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.info = {"blender": "fake", "devices": {"cuda": ["Fake GPU"], "cpu": ["CPU"]}}

    def configure(self, settings):
        self.settings = settings
        return {"event": "configured", "device": "cuda", "names": ["Fake GPU"]}


@pytest.mark.parametrize(("worker", "denoiser", "driver_passes"), [(FakeWorker, "driver", True),
                                                                   (FakeGpuWorker, "cycles", False)])
def test_auto_denoiser_is_the_driver_on_the_cpu_and_cycles_on_a_gpu(tmp_path, cfg, worker, denoiser, driver_passes):
    """'auto' prefers what was measured: the driver's OIDN on the CPU, Cycles' own on a GPU
    (the driver's OIDN on CUDA has never run on a GPU).  The passes Blender renders, the
    settings the worker gets and the shards' denoiser attribute follow the choice."""
    cfg["render"].update(device="auto", denoiser="auto")  # the defaults (this module's fixture pins both)
    assert cfg["render"]["denoise"]
    j = GenerateJob(tmp_path / "o", 2, 1, cfg, workers=1, progress=False, worker_factory=worker)
    environ = dict(os.environ)
    try:
        j.prepare()  # on a GPU it sets the CUDA JIT cache variables for the workers it would start
    finally:
        j.folder.release()
        os.environ.clear()
        os.environ.update(environ)
    assert j.cfg["render"]["denoiser"] == denoiser
    assert j.folder.cfg["render"]["denoiser"] == "auto", "the manifest keeps the settings as given"
    assert ("denoising_albedo" in {o.name for o in j.outputs}) == driver_passes
    assert ("in the driver" in j.folder.attrs["denoiser"]) == driver_passes
    settings = j._settings(0, 1)
    assert settings["denoise"] is not driver_passes  # Cycles denoises only when the driver does not
    assert settings.get("denoising_use_gpu", False) is (not driver_passes)
