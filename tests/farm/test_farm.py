"""Render farms without a scheduler: --part auto from the environment, task planning, the
sbatch scripts `submit slurm` writes, merge naming missing shards."""

import json
import subprocess

import pytest
from conftest import listing, run_cli

from clevr_remv.errors import UsageError
from clevr_remv.farm import parts as farm_parts
from clevr_remv.run import plan
from clevr_remv.store import files

# -- --part auto ---------------------------------------------------------------------------------

def test_slurm_plain_range_counts_from_its_minimum():
    env = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "9",
           "SLURM_ARRAY_TASK_COUNT": "10"}
    assert farm_parts.resolve_part(env).spec == "8/10"
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "10",
           "SLURM_ARRAY_TASK_COUNT": "10"}
    assert farm_parts.resolve_part(env).spec == "1/10", "--array=1-10: the first task is part 1"


def test_slurm_sparse_array_needs_the_part_count():
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "7",
           "SLURM_ARRAY_TASK_COUNT": "3"}
    with pytest.raises(UsageError, match="CLEVR_REMV_PARTS"):
        farm_parts.resolve_part(env)
    assert farm_parts.resolve_part({**env, "CLEVR_REMV_PARTS": "8"}).spec == "4/8"


def test_kubernetes_index_with_the_completions_count():
    assert farm_parts.resolve_part({"JOB_COMPLETION_INDEX": "0", "CLEVR_REMV_PARTS": "625"}).spec == "1/625"
    assert farm_parts.resolve_part({"JOB_COMPLETION_INDEX": "624", "CLEVR_REMV_PARTS": "625"}).spec == "625/625"
    with pytest.raises(UsageError, match="completions"):
        farm_parts.resolve_part({"JOB_COMPLETION_INDEX": "3"})
    with pytest.raises(UsageError, match="from 0 to 624"):
        farm_parts.resolve_part({"JOB_COMPLETION_INDEX": "625", "CLEVR_REMV_PARTS": "625"})


@pytest.mark.parametrize("env, words", [
    ({}, "no SLURM_ARRAY_TASK_ID"),
    ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "3"}, "not an integer"),
    ({"SLURM_ARRAY_TASK_ID": "1", "JOB_COMPLETION_INDEX": "1"}, "both"),
    ({"SLURM_ARRAY_TASK_ID": "1", "CLEVR_REMV_PARTS": "0"}, ">= 1"),
])
def test_part_auto_errors_say_what_to_do(env, words):
    with pytest.raises(UsageError, match=words):
        farm_parts.resolve_part(env)


def test_generate_part_auto_outside_a_scheduler_is_one_line_exit_2(tmp_path):
    env = {k: "" for k in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "CLEVR_REMV_PARTS")}
    out = tmp_path / "o"
    r = run_cli("generate", "--scenes", 2, "--out", out, "--part", "auto", env=env)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "--part K/M" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_visible_gpus_and_what_counts_as_given():
    assert farm_parts.visible_gpus({}) is None
    assert farm_parts.visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == "CUDA_VISIBLE_DEVICES=2,3"
    assert farm_parts.gpus_were_given({"CUDA_VISIBLE_DEVICES": "0"})
    for none in ("", "NoDevFiles", "-1"):
        assert not farm_parts.gpus_were_given({"CUDA_VISIBLE_DEVICES": none})


# -- tasks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shards_total, per_task", [(5, 1), (5, 2), (5, 3), (625, 4), (1, 8), (10000, 10)])
def test_every_shard_belongs_to_exactly_one_task_as_its_part(shards_total, per_task):
    tasks = farm_parts.task_count(shards_total, per_task)
    owned = [k for i in range(tasks) for k in farm_parts.shards_of_task(i, tasks, shards_total)]
    assert sorted(owned) == list(range(shards_total))
    assert max(len(farm_parts.shards_of_task(i, tasks, shards_total)) for i in range(tasks)) <= per_task
    # The same shards as generate --part (i+1)/tasks selects.
    for i in range(tasks):
        k, m = plan.parse_part(f"{i + 1}/{tasks}")
        assert farm_parts.shards_of_task(i, tasks, shards_total) == [s for s in range(shards_total) if s % m == k - 1]
        assert farm_parts.part_manifest_name(k, m) == f"manifest.part-{k:03d}-of-{m:03d}.json"


def test_array_ranges_in_slurm_syntax():
    assert farm_parts.format_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert farm_parts.format_ranges([3]) == "3"
    assert farm_parts.format_ranges([4, 2, 3]) == "2-4"


def test_missing_shards_name_their_part():
    manifest = {"shards": [{"path": "a"}, {"path": "c"}], "parts_expected": 2}
    assert farm_parts.missing_shards(manifest, ["a", "b", "c", "d"]) == [("b", 2), ("d", 2)]
    assert farm_parts.missing_shards({"shards": [], "part": None}, ["a"]) == [("a", None)]


# -- submit slurm --dry-run: the scripts --------------------------------------------------------

def _dry(tmp_path, *extra):
    out = tmp_path / "run"
    r = run_cli("submit", "slurm", "--scenes", 8, "--shard-size", 2, "--out", out, "--dry-run", *extra)
    return out, r


def test_dry_run_writes_readable_sbatch_scripts_with_every_option(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"render": {"denoise": False}}))
    out, r = _dry(tmp_path, "--partition", "gpu", "--account", "proj42", "--time", "4:00:00",
                  "--gpus-per-task", 2, "--mem", "16G", "--cpus-per-task", 8, "--parallel", 3,
                  "--shards-per-task", 2, "--sbatch-line", "--qos=long", "--sbatch-line", "#SBATCH --constraint=a100",
                  "--setup", "module load cuda", "--config", cfg, "--samples", 64,
                  "--blender", "/opt/blender-4.5/blender")
    assert r.returncode == 0, r.stderr
    assert "would submit 3 of 3 tasks (0-2)" in r.stdout
    script = (out / "logs" / "slurm" / "render.sbatch").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=proj42", "#SBATCH --time=4:00:00",
                 "#SBATCH --gres=gpu:2", "#SBATCH --mem=16G", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --array=0-2%3", "#SBATCH --qos=long", "#SBATCH --constraint=a100",
                 f"#SBATCH --output={out}/logs/slurm/render-%A_%a.out", "module load cuda",
                 "export CLEVR_REMV_PARTS=3"):
        assert line in script.splitlines(), line
    assert f"--part auto --scenes 8 --out {out} --seed 0 --config {cfg} --shard-size 2 --samples 64" in script
    assert "--blender /opt/blender-4.5/blender --no-progress" in script, "a path on the nodes, not checked here"
    merge = (out / "logs" / "slurm" / "merge.sbatch").read_text()
    assert "#SBATCH --partition=gpu" in merge and "--gres" not in merge and f"merge {out}" in merge
    for path in ("render.sbatch", "merge.sbatch"):
        assert subprocess.run(["bash", "-n", str(out / "logs" / "slurm" / path)]).returncode == 0
    # Only logs/ was created: generate still accepts the folder.
    assert listing(out) == ["logs", "logs/slurm", "logs/slurm/merge.sbatch", "logs/slurm/render.sbatch"]


@pytest.mark.parametrize("args, words", [
    (["--sbatch-line", "qos=long"], "not an sbatch option"),
    (["--parallel", "0"], "--parallel must be at least 1"),
    (["--shards-per-task", "0"], "--shards-per-task must be at least 1"),
    (["--samples", "0"], "render.samples"),
])
def test_submit_bad_input_is_one_line_exit_2(tmp_path, args, words):
    out, r = _dry(tmp_path, *args)
    assert r.returncode == 2, r.stderr
    assert words in r.stderr and r.stderr.count("\n") == 1
    assert not out.exists()


def test_submit_refuses_more_scenes_than_generate_accepts(tmp_path):
    # Every array task would run generate, which refuses more than plan.MAX_SCENES.
    out = tmp_path / "run"
    r = run_cli("submit", "slurm", "--scenes", plan.MAX_SCENES + 1, "--out", out, "--dry-run")
    assert r.returncode == 2, r.stderr
    assert "--scenes" in r.stderr and r.stderr.count("\n") == 1
    assert not out.exists()
    r = run_cli("generate", "--scenes", plan.MAX_SCENES + 1, "--out", out)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and not out.exists()
    with pytest.raises(UsageError, match="at most"):
        plan.check_run(plan.MAX_SCENES + 1, 0)
    with pytest.raises(UsageError, match="--seed"):
        plan.check_run(1, -1)


def test_submit_refuses_an_out_that_cannot_be_made(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for out, words in ((f, "is a file; give a folder"), (f / "run", "cannot be created")):
        r = run_cli("submit", "slurm", "--scenes", 8, "--out", out, "--dry-run")
        assert r.returncode == 2 and words in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert listing(tmp_path) == ["file"]


def test_submit_refuses_a_folder_with_another_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    files.write_json_atomic(out / "manifest.part-001-of-005.json",
                             {"config_digest": "0" * 16, "scenes": 8, "seed": 1, "part": [1, 5]})
    _, r = _dry(tmp_path)
    assert r.returncode == 2 and "other settings" in r.stderr


# -- merge names what is missing (a real, tiny render of one of two parts) -----------------------

@pytest.mark.render
def test_merge_of_an_incomplete_run_names_missing_shards_and_exits_1(tmp_path, tiny_config_file):
    out = tmp_path / "half"
    r = run_cli("generate", "--out", out, "--config", tiny_config_file, "--scenes", 3, "--shard-size", 1,
                "--width", 48, "--height", 32, "--part", "1/2")
    assert r.returncode == 0, r.stderr
    r = run_cli("merge", out)
    assert r.returncode == 1, r.stderr
    assert "INCOMPLETE: 1 of 3 shards missing, from parts 2 of 2" in r.stderr
    assert "missing train/train-00001.h5 (part 2/2)" in r.stderr
    m = files.read_json(out / "manifest.json")
    assert not m["complete"] and [e["path"] for e in m["shards"]] == ["train/train-00000.h5", "val/val-00000.h5"]


@pytest.mark.render
def test_part_auto_under_slurm_variables_logs_its_part_and_the_gpus_it_was_given(tmp_path, tiny_config_file):
    """As an array task sees it (the variables Slurm sets), on a machine without a GPU: the
    part comes from the array, the GPUs the scheduler named are logged, and falling back to the
    CPU although GPUs were given is a warning in the task's log."""
    out = tmp_path / "task"
    env = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "2",
           "SLURM_ARRAY_TASK_COUNT": "3", "CLEVR_REMV_PARTS": "", "JOB_COMPLETION_INDEX": "",
           "CUDA_VISIBLE_DEVICES": "0"}
    r = run_cli("generate", "--out", out, "--config", tiny_config_file, "--scenes", 3, "--shard-size", 1,
                "--width", 48, "--height", 32, "--part", "auto", env=env)
    assert r.returncode == 0, r.stderr
    assert "Slurm array task 2 of 0-2 -> part 3/3" in r.stderr
    assert "GPUs given by the scheduler: CUDA_VISIBLE_DEVICES=0" in r.stderr
    assert "Blender found none it can use" in r.stderr
    m = files.read_json(out / "manifest.part-003-of-003.json")
    assert m["part"] == [3, 3] and m["complete"] and [e["path"] for e in m["shards"]] == ["val/val-00000.h5"]


# -- the container recipe and the Kubernetes manifest in docs/ ----------------------------------

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
# In every Debian base image (python:3.11-slim-bookworm included).
BASE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g", "libzstd1", "liblzma5", "libbz2-1.0"}


def test_kubernetes_manifest_gives_the_part_count_and_one_shard_per_pod():
    import yaml

    from clevr_remv.config import load_config

    text = (ROOT / "docs" / "kubernetes.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    docs = [d for d in yaml.safe_load_all(block) if d]
    job = next(d for d in docs if d["kind"] == "Job" and d["spec"].get("completionMode") == "Indexed")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    parts = int(next(e["value"] for e in container["env"] if e["name"] == "CLEVR_REMV_PARTS"))
    assert parts == job["spec"]["completions"]
    assert args[:3] == ["generate", "--part", "auto"]
    cfg = load_config()
    scenes = int(args[args.index("--scenes") + 1])
    assert len(plan.plan_shards(scenes, cfg["output"]["splits"], cfg["output"]["shard_size"])) == parts
    assert farm_parts.resolve_part({"JOB_COMPLETION_INDEX": str(parts - 1), "CLEVR_REMV_PARTS": str(parts)}).spec \
        == f"{parts}/{parts}"
    mounts = {m["name"] for m in container["volumeMounts"]}
    assert mounts == {v["name"] for v in pod["volumes"]} and "nvidia.com/gpu" in container["resources"]["limits"]
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_dockerfile_installs_every_system_library_bpy_links_against():
    """ldd on bpy's extension module and bundled libraries here; dpkg names the package of each
    system library they load; every such package is in the Dockerfile's apt-get line."""
    import importlib.util
    import re
    from pathlib import Path

    bpy_dir = Path(importlib.util.find_spec("bpy").origin).parent
    sos = [bpy_dir / "__init__.so", *sorted((bpy_dir / "lib").glob("*.so*"))]
    libs = set()
    for so in sos:
        out = subprocess.run(["ldd", str(so)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.match(r"\s*(\S+) => (/\S+)", line)
            if m and not m.group(2).startswith(str(bpy_dir)):
                libs.add(m.group(2))
    assert any("libGL.so" in lib for lib in libs), "ldd found bpy's OpenGL dependency"
    packages = set()
    for lib in sorted(libs):
        # usrmerge: a library may be packaged under /lib or /usr/lib, by its name or its target
        for name in dict.fromkeys([lib, str(Path(lib).resolve()), lib.replace("/usr/lib/", "/lib/", 1),
                                   str(Path(lib).resolve()).replace("/usr/lib/", "/lib/", 1)]):
            r = subprocess.run(["dpkg", "-S", name], capture_output=True, text=True)
            if r.returncode == 0:
                break
        assert r.returncode == 0, f"dpkg does not know {lib}: {r.stderr}"
        packages.add(r.stdout.split(":")[0])
    dockerfile = (ROOT / "Dockerfile").read_text()
    installed = set(re.findall(r"\b(lib[\w.+-]+)\b", dockerfile.split("apt-get install", 1)[1].split("rm -rf", 1)[0]))
    assert packages - BASE_PACKAGES <= installed, sorted(packages - BASE_PACKAGES - installed)


def test_cycles_threads_follow_the_cpus_a_task_was_given(tmp_path):
    from clevr_remv.farm.schedulers import usable_cpus
    from clevr_remv.render.devices import render_settings

    machine = usable_cpus({}, cgroup_cpu_max=str(tmp_path / "none"))
    assert machine >= 1
    assert usable_cpus({"SLURM_CPUS_PER_TASK": "1"}, str(tmp_path / "none")) == 1
    assert usable_cpus({"SLURM_JOB_CPUS_PER_NODE": "1(x3)"}, str(tmp_path / "none")) == 1
    assert usable_cpus({"SLURM_CPUS_PER_TASK": "512"}, str(tmp_path / "none")) == machine, "never more than the machine"
    quota = tmp_path / "cpu.max"
    quota.write_text("100000 100000\n")  # a Kubernetes limit of one CPU
    assert usable_cpus({}, str(quota)) == 1
    quota.write_text("max 100000\n")
    assert usable_cpus({}, str(quota)) == machine
    cpu = {"device": "cpu", "names": ["CPU"], "count": 1}
    assert render_settings({"render": {}}, cpu, 0, 1, [], cpu_count=8)["threads"] == 8
    assert render_settings({"render": {}}, cpu, 0, 2, [], cpu_count=8)["threads"] == 4


def test_a_parts_manifest_and_folders_use_one_name():
    from clevr_remv.config import load_config

    rp = plan.RunPlan.from_args(8, 0, load_config(None), part="3/12")
    assert rp.part_tag == plan.part_tag(3, 12) == "part-003-of-012"
    assert rp.manifest_name == farm_parts.part_manifest_name(3, 12) == "manifest.part-003-of-012.json"
    assert plan.RunPlan.from_args(8, 0, load_config(None)).manifest_name == plan.manifest_name(None) == "manifest.json"


def test_submit_kubernetes_writes_an_indexed_job_whose_completions_are_the_part_count(tmp_path):
    import yaml

    where = tmp_path / "k8s"
    r = run_cli("submit", "kubernetes", "--scenes", 10, "--shard-size", 2, "--out", "/data/run", "--image",
                "registry.example.com/clevr-remv:1", "--mem", "16Gi", "--cpus-per-task", 4, "--parallel", 3,
                "--manifests", where)
    assert r.returncode == 0, r.stderr
    job = yaml.safe_load((where / "render-job.yaml").read_text())
    merge = yaml.safe_load((where / "merge-job.yaml").read_text())
    spec = job["spec"]
    container = spec["template"]["spec"]["containers"][0]
    parts = int(next(e["value"] for e in container["env"] if e["name"] == "CLEVR_REMV_PARTS"))
    cfg = __import__("clevr_remv.config", fromlist=["x"]).load_config(None, {"output.shard_size": 2})
    shards = len(plan.plan_shards(10, cfg["output"]["splits"], 2))
    assert spec["completionMode"] == "Indexed" and spec["completions"] == parts == shards
    assert spec["parallelism"] == 3
    assert container["args"][:3] == ["generate", "--part", "auto"] and "--shard-size" in container["args"]
    assert container["args"][container["args"].index("--out") + 1] == "/data/run"
    assert container["resources"] == {"requests": {"cpu": "4", "memory": "16Gi"},
                                      "limits": {"memory": "16Gi", "nvidia.com/gpu": 1}}
    assert merge["spec"]["template"]["spec"]["containers"][0]["args"] == ["merge", "/data/run"]
    # The last pod's variables give the last part.
    assert farm_parts.resolve_part({"JOB_COMPLETION_INDEX": str(parts - 1), "CLEVR_REMV_PARTS": str(parts)}).spec \
        == f"{parts}/{parts}"
    assert f"kubectl apply -f {where}/render-job.yaml" in r.stdout


def test_submit_kubernetes_refuses_an_out_outside_the_volume(tmp_path):
    r = run_cli("submit", "kubernetes", "--scenes", 4, "--out", "/elsewhere/run", "--image", "x",
                "--manifests", tmp_path / "k8s")
    assert r.returncode == 2 and "under --mount" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "k8s").exists()


@pytest.mark.parametrize("args, words", [
    (["--time", "forever"], "not a Slurm time"),
    (["--mem", "lots"], "not a Slurm memory size"),
    (["--merge-time", "1h"], "not a Slurm time"),
    (["--merge-mem", "4 GB"], "not a Slurm memory size"),
])
def test_submit_slurm_dry_run_checks_time_and_memory_syntax(tmp_path, args, words):
    out, r = _dry(tmp_path, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert words in r.stderr and r.stderr.count("\n") == 1
    assert not out.exists()


def test_slurm_time_and_memory_syntax_accepts_what_sbatch_accepts():
    from clevr_remv.farm.schedulers.slurm import check_mem, check_time

    for ok in ("30", "30:00", "4:00:00", "2-0", "2-12:00", "1-00:00:00", "UNLIMITED"):
        check_time("--time", ok)
    for ok in ("16G", "16000", "512M", "1t"):
        check_mem("--mem", ok)


@pytest.mark.render
def test_a_part_beyond_the_shard_count_says_it_has_nothing_to_do(tmp_path, tiny_config_file):
    out = tmp_path / "o"
    r = run_cli("generate", "--out", out, "--config", tiny_config_file, "--scenes", 4, "--shard-size", 1,
                "--width", 48, "--height", 32, "--part", "5/5")
    assert r.returncode == 0, r.stderr
    assert "part 5/5 has nothing to do: this run has 4 shards, so only parts 1 to 4 of 5 render any" in r.stderr
    assert "complete" not in r.stderr.splitlines()[-1]
    assert files.read_json(out / "manifest.part-005-of-005.json")["shards"] == []


def test_submit_writes_no_script_through_a_link_out_of_the_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    outside = tmp_path / "home"
    (outside / "slurm").mkdir(parents=True)
    (outside / "slurm" / "render.sbatch").write_text("mine\n")
    (out / "logs").symlink_to(outside, target_is_directory=True)
    r = run_cli("submit", "slurm", "--scenes", 8, "--out", out, "--dry-run")
    assert r.returncode == 2 and "symbolic link" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert (outside / "slurm" / "render.sbatch").read_text() == "mine\n"
    assert listing(outside) == ["slurm", "slurm/render.sbatch"]
