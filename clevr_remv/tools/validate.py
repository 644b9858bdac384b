"""``clevr-remv validate DIR``: read every shard in full and check what its data claims.

Checksums (``info --verify``) only prove that a file did not change after the manifest was
written; a shard corrupted while it was written carries a matching checksum.  This reads the
data and checks it against itself, the rig formulas and the manifest:

* ``structure``: every dataset of the shard format (docs/format.md, defined once in
  :func:`clevr_remv.store.schema.layout` for the run's settings and format version) is there
  with its shape and dtype; the file's grid, resolution and config digest;
* ``split``: each split's scene range against its shards and the manifest's counts;
* ``scene_record``: the scene JSON parses and carries its global index;
* ``unreadable``: a chunk that does not decompress;
* ``instance_ids``: ids only from 0 to the scene's object count;
* ``ids_without_depth``: an object id on a pixel whose depth is not finite;
* ``visible_pixels``: the stored counts against the instance maps (-1 past the last object);
* ``amodal_pixels``, ``amodal_absent``, ``amodal_visible`` (format 1.4 on): the amodal masks
  against their counts, the scene's objects and the instance maps (:mod:`.amodal_checks`);
* ``camera``: intrinsics and world-to-camera against :mod:`clevr_remv.scene.lightfield`;
* ``program``: every program re-executes on its scene to exactly its stored targets
  (``refexps/object`` the first, -1 for none), and its stored anchors are what the program
  picks before each relation;
* ``valid_views``: against the visibility in the instance maps and each view's own directions;
* ``checksum``: the file's SHA-256 against the manifest.

Every violation is printed with its place (shard, scene, view, expression); the exit code is 1
when there is any, 0 otherwise.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .. import FORMAT_VERSION
from ..errors import UsageError
from ..language import programs, validity
from ..read.checks import shard_problem
from ..scene import lightfield
from ..store import refexps, schema
from ..store.refexps import read_refexps
from .amodal_checks import check_view as check_amodal_view
from .common import min_visible_pixels, open_dataset


@dataclass
class Violation:
    kind: str
    shard: str
    message: str
    scene: int | None = None
    view: tuple[int, int] | None = None
    expression: str | None = None

    def line(self) -> str:
        place = [f"shard {self.shard}"]
        if self.scene is not None:
            place.append(f"scene {self.scene}")
        if self.view is not None:
            place.append(f"view ({self.view[0]},{self.view[1]})")
        if self.expression is not None:
            place.append(f"expression {self.expression}")
        return f"VIOLATION {self.kind}: {', '.join(place)}: {self.message}"


def _names(ids) -> str:
    ids = list(ids)
    return "no object" if not ids else (f"object {ids[0]}" if len(ids) == 1 else f"objects {ids}")


def _attr(f, key):
    value = f.attrs.get(key)
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


class Validator:
    def __init__(self, root: Path, report, progress):
        self.reader = open_dataset(root)
        self.root = Path(root)
        self.report = report        # called with each Violation as it is found
        self.progress = progress    # called with one line per shard
        self.min_px = min_visible_pixels(self.reader)
        cfg = self.cfg = self.reader.manifest.get("config", {})
        self.max_objects = int(cfg.get("scene", {}).get("max_objects", 10))
        self.violations: list[Violation] = []
        self.counts = {"shards": 0, "scenes": 0, "views": 0, "expressions": 0}

    def _v(self, kind, shard, message, **where) -> None:
        v = Violation(kind, shard, message, **where)
        self.violations.append(v)
        self.report(v)

    # -- manifest-level ---------------------------------------------------------------------
    def check_splits(self) -> None:
        # Each shard's split is one of the manifest's and its file lies in that split's folder:
        # the Reader (dataset_info.manifest_problem) refuses a manifest where either fails.
        m = self.reader.manifest
        splits = m.get("splits", {})
        seen = []
        for e in self.reader.shards:
            name = e["path"]
            a, b = e["scene_range"]
            sa, sb = splits[e["split"]]["scene_range"]
            if not (sa <= a < b <= sb):
                self._v("split", name, f"scene range {a}-{b - 1} lies outside split {e['split']}'s {sa}-{sb - 1}")
            if e.get("num_scenes") != b - a:
                self._v("split", name, f"num_scenes {e.get('num_scenes')} but scene range {a}-{b - 1} holds {b - a}")
            seen.append((a, b, name, e["split"]))
        seen.sort()
        for (a0, b0, n0, _), (a1, b1, n1, _) in zip(seen, seen[1:]):
            if a1 < b0:
                self._v("split", n1, f"scene range {a1}-{b1 - 1} overlaps {n0} ({a0}-{b0 - 1})")
        if m.get("complete"):
            for split, spec in splits.items():
                sa, sb = spec["scene_range"]
                have = sum(min(b, sb) - max(a, sa) for a, b, _, sp in seen if sp == split and a < sb and b > sa)
                if have != sb - sa:
                    self._v("split", "manifest.json", f"split {split} should hold scenes {sa}-{sb - 1} "
                            f"({sb - sa}) but its finished shards hold {have}")
            total = sum(spec["scene_range"][1] - spec["scene_range"][0] for spec in splits.values())
            if total != m.get("scenes"):
                self._v("split", "manifest.json", f"split ranges add up to {total} scenes, manifest says {m.get('scenes')}")

    # -- one shard ----------------------------------------------------------------------------
    def check_shard(self, entry: dict) -> None:
        name = entry["path"]
        path = self.root / name
        if not path.exists():
            self._v("structure", name, "file missing")
            return
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            self._v("unreadable", name, f"not an HDF5 file h5py can open ({exc})")
            return
        with f:
            self._check_open_shard(f, entry, name)
        from ..store.shards import sha256_file

        if entry.get("sha256") and sha256_file(path) != entry["sha256"]:
            self._v("checksum", name, "SHA-256 differs from the manifest's")

    def _check_open_shard(self, f: h5py.File, entry: dict, name: str) -> None:
        rows, cols = self.reader.grid
        w, h = self.reader.width, self.reader.height
        n = entry["scene_range"][1] - entry["scene_range"][0]
        r = f["refexps/scene"].shape[0] if "refexps/scene" in f else 0
        version = _attr(f, "format_version") or self.reader.manifest.get("format_version") or FORMAT_VERSION
        broken = set()
        for key, spec in schema.layout(n, (rows, cols), h, w, self.max_objects, self.cfg, r, version).items():
            if key == "refexps/anchor" and key not in f:
                continue  # an extension: shards may predate it (the reader derives it)
            problem = f"dataset {key} missing" if key not in f else spec.problem(f[key])
            if problem:
                self._v("structure", name, problem)
                broken.add(key)
        if entry.get("refexps") is not None and entry["refexps"] != r:
            self._v("structure", name, f"{r} expressions in the file, the manifest says {entry['refexps']}")
        for key, want in (("grid", [rows, cols]), ("resolution", [w, h]),
                          ("config_digest", self.reader.manifest.get("config_digest"))):
            got = _attr(f, key)
            if got is not None and want is not None and got != want:
                self._v("structure", name, f"file attribute {key} is {got!r}, the manifest says {want!r}")
        got = _attr(f, "codecs")
        if got is not None or schema.version_key(version) >= (1, 2):
            try:
                want = schema.codec_descriptions(self.cfg, version)
            except UsageError as exc:
                want = str(exc)
            if got != want:
                self._v("structure", name, f"file attribute codecs is {got!r}, the run's settings give {want!r}")
        if any(not key.startswith("refexps/") for key in broken):
            return  # shapes are off: per-scene checks would only repeat it
        problem = shard_problem(f) if not broken else None
        if problem:  # records or expressions out of bounds: the checks below would trip on them
            self._v("structure", name, problem)
            return
        refs = read_refexps(f) if not broken else []
        by_scene: dict[int, list[int]] = {}
        for i, e in enumerate(refs):
            by_scene.setdefault(e["scene"], []).append(i)
        bad_rows = [int(x) for x in by_scene if not 0 <= x < n]
        for row in bad_rows:
            for i in by_scene[row]:
                self._v("structure", name, f"refexps/scene is {row}, outside the shard's {n} scenes",
                        expression=f"row {i}")
        for row in range(n):
            self._check_scene(f, entry, name, row, refs, by_scene.get(row, []))
        self.counts["shards"] += 1

    def _check_scene(self, f, entry, name, row, refs, expr_rows) -> None:
        rows, cols = self.reader.grid
        index = entry["scene_range"][0] + row
        where = {"scene": index}
        try:
            scene = json.loads(f["scenes"].asstr()[row])
            objects = scene["objects"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
            self._v("scene_record", name, f"scene record does not parse ({exc})", **where)
            return
        if scene.get("index") != index:
            self._v("scene_record", name, f"scene record says index {scene.get('index')}, its place says {index}", **where)
        nobj = len(objects)
        datasets = {}
        for key in schema.stored_names(f):
            try:
                datasets[key] = schema.read_output(f, key, row)
            except OSError as exc:  # a chunk that does not decompress: find which views
                self._unreadable_views(f, key, name, row, index, exc)
        self.counts["scenes"] += 1
        self.counts["views"] += rows * cols
        ids = datasets.get("instances")
        depth = datasets.get("depth")
        vp = f["visible_pixels"][row]
        counts = np.zeros((rows, cols, nobj), np.int64)
        if ids is not None:
            for u in range(rows):
                for v in range(cols):
                    view = {"view": (u, v), **where}
                    top = int(ids[u, v].max())
                    if top > nobj:
                        self._v("instance_ids", name, f"instance id {top} but the scene has {nobj} objects", **view)
                    bc = np.bincount(ids[u, v].ravel(), minlength=max(top, nobj) + 1)
                    counts[u, v] = bc[1:nobj + 1]
                    if depth is not None:
                        stray = int(((ids[u, v] > 0) & ~np.isfinite(depth[u, v])).sum())
                        if stray:
                            self._v("ids_without_depth", name,
                                    f"{stray} pixel(s) carry an object id where depth is not finite", **view)
                    want = np.full(vp.shape[-1], -1, np.int64)
                    want[:nobj] = counts[u, v]
                    diff = np.flatnonzero(vp[u, v] != want)
                    for k in diff:
                        what = f"object {k}" if k < nobj else f"slot {k} (past the {nobj} objects)"
                        self._v("visible_pixels", name, f"{what}: stored {int(vp[u, v, k])}, "
                                f"the instance map gives {int(want[k])}", **view)
        whole = datasets.get("amodal")
        if ids is not None and whole is not None and "amodal_pixels" in f:
            stored = f["amodal_pixels"][row]
            for u in range(rows):
                for v in range(cols):
                    for kind, message in check_amodal_view(ids[u, v], whole[u, v], stored[u, v], nobj):
                        self._v(kind, name, message, view=(u, v), **where)
        rig = scene.get("rig")
        if rig is None:
            self._v("scene_record", name, "scene record has no rig", **where)
        else:
            if list(rig.get("grid", [])) != [rows, cols] or [rig.get("width"), rig.get("height")] != \
                    [self.reader.width, self.reader.height]:
                self._v("camera", name, f"the rig's grid {rig.get('grid')} / size {rig.get('width')}x{rig.get('height')} "
                        f"differs from the manifest's", **where)
            else:
                ks, es = lightfield.all_cameras(rig)
                k_st = f["cameras/intrinsics"][row]
                e_st = f["cameras/world_to_camera"][row]
                for u in range(rows):
                    for v in range(cols):
                        for label, got, want in (("intrinsics", k_st[u, v], ks[u, v]),
                                                 ("world_to_camera", e_st[u, v], es[u, v])):
                            if not np.allclose(got, want, rtol=1e-6, atol=1e-6):
                                err = float(np.abs(got - want).max())
                                self._v("camera", name, f"{label} differs from the rig formulas by up to {err:.3g}",
                                        view=(u, v), **where)
        for k, i in enumerate(expr_rows):
            self._check_expression(refs, i, k, scene, counts if ids is not None else None, name, index)

    def _unreadable_views(self, f, key, name, row, index, exc) -> None:
        rows, cols = self.reader.grid
        found = False
        for u in range(rows):
            for v in range(cols):
                try:
                    schema.read_output(f, key, (row, u, v))
                except OSError:
                    found = True
                    self._v("unreadable", name, f"{key} does not decompress", scene=index, view=(u, v))
        if not found:
            self._v("unreadable", name, f"{key} does not read ({exc})", scene=index)

    def _check_expression(self, refs, i, k, scene, counts, name, index) -> None:
        self.counts["expressions"] += 1
        eid = f"{index}-{k}"
        where = {"scene": index, "expression": eid}
        nobj = len(scene["objects"])
        e = refs[i]
        target, targets = e["object"], tuple(e["targets"])
        stored_anchors = tuple(e["anchors"]) if "anchors" in e else None
        bad = [t for t in (target,) + targets + (stored_anchors or ())
               if not 0 <= t < nobj and (t, targets) != (-1, ())]
        if bad:
            self._v("program", name, f"target object {bad[0]} is not among the scene's {nobj} objects", **where)
            return
        program = e["program"]
        if program is None:
            self._v("program", name, "program is not JSON", **where)
            return
        try:
            got = programs.targets_of(program, scene)
        except (programs.ProgramError, KeyError, TypeError, IndexError, AttributeError) as exc:
            self._v("program", name, f"program does not execute ({type(exc).__name__}: {exc})", **where)
            return
        if got != targets:
            self._v("program", name, f"program picks {_names(got)}, the stored targets are {_names(targets)} "
                    f"(text: {e['text']!r})", **where)
            return
        if target != (targets[0] if targets else -1):
            self._v("program", name, f"program picks {_names(got)}, but refexps/object is {target} (it must be "
                    f"the first target, or -1 for none)", **where)
            return
        anchors = tuple(refexps.anchors(e, scene))
        if stored_anchors is not None and stored_anchors != programs.anchors_of(program, scene):
            self._v("program", name, f"stored anchors {list(stored_anchors)}, the program's are "
                    f"{list(programs.anchors_of(program, scene))}", **where)
        if counts is None:
            return
        expr = {"object": target, "targets": targets, "anchors": anchors, "program": program}
        want = validity.valid_views(expr, scene, counts, self.min_px)
        stored = e["valid_views"]
        for u, v in zip(*np.nonzero(stored != want)):
            why = self._why(expr, scene, counts[u, v], int(u), int(v))
            self._v("valid_views", name, f"stored {bool(stored[u, v])}, should be {bool(want[u, v])} ({why})",
                    view=(int(u), int(v)), **where)

    def _why(self, expr, scene, counts, u, v) -> str:
        parts = [f"target {t} shows {int(counts[t])} px" for t in expr["targets"]] or ["no target"]
        parts += [f"anchor {a} shows {int(counts[a])} px" for a in expr["anchors"]]
        if any(node.get("op") == "relate" for node in expr["program"]):
            dirs = programs.view_directions(scene["rig"], u, v)
            try:
                picked = _names(programs.targets_of(expr["program"], scene, dirs))
            except programs.ProgramError:
                picked = "no single object"
            parts.append(f"with this view's directions the program picks {picked}")
        return ", ".join(parts) + f"; at least {self.min_px} px counts as visible"

    def run(self) -> list[Violation]:
        self.check_splits()
        total = len(self.reader.shards)
        for n, entry in enumerate(self.reader.shards, 1):
            t0 = time.perf_counter()
            before = len(self.violations)
            s0, e0 = self.counts["scenes"], self.counts["expressions"]
            self.check_shard(entry)
            found = len(self.violations) - before
            self.progress(f"validate: [{n}/{total}] {entry['path']}: {self.counts['scenes'] - s0} scenes, "
                          f"{self.counts['expressions'] - e0} expressions, "
                          f"{'ok' if not found else f'{found} violation(s)'} ({time.perf_counter() - t0:.1f} s)")
        self.reader.close()
        return self.violations
