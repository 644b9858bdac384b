"""The plan of a generate run: pure functions of the command line and the config.

Checks of the CLI arguments, split ranges, shard plans and this node's part.  Nothing here
touches the disk or Blender, so all of it is unit-tested directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import FORMAT_VERSION, config
from ..errors import UsageError

# Scenes one --out may hold: bounds the plan's memory and time (2 million scenes: ~0.3 GB and
# ~2 s to plan; ~40 TB of shards at the defaults).  Larger datasets: several --out folders.
MAX_SCENES = 2_000_000


@dataclass(frozen=True)
class ShardPlan:
    """One shard: scenes ``first`` .. ``end - 1`` of a split."""

    split: str
    number: int
    first: int
    end: int

    @property
    def name(self) -> str:
        return f"{self.split}/{self.split}-{self.number:05d}.h5"

    @property
    def scenes(self) -> range:
        return range(self.first, self.end)


def split_ranges(scenes: int, splits: dict) -> dict[str, tuple[int, int]]:
    """Contiguous scene-index ranges per split, in the order given (70/15/15 by default)."""
    total = float(sum(splits.values()))
    out, start, acc = {}, 0, 0.0
    names = list(splits)
    for i, name in enumerate(names):
        acc += splits[name]
        end = scenes if i == len(names) - 1 else int(round(scenes * acc / total))
        out[name] = (start, max(start, end))
        start = max(start, end)
    return out


def plan_shards(scenes: int, splits: dict, shard_size: int) -> list[ShardPlan]:
    plans = []
    for name, (a, b) in split_ranges(scenes, splits).items():
        for k, s in enumerate(range(a, b, shard_size)):
            plans.append(ShardPlan(name, k, s, min(s + shard_size, b)))
    return plans


def parse_part(spec: str | None) -> tuple[int, int] | None:
    """'K/M' (1-based K): this node renders shards k with k % M == K - 1."""
    if not spec:
        return None
    try:
        k, m = (int(x) for x in spec.split("/"))
    except ValueError:
        raise UsageError(f"--part '{spec}' is not K/M (e.g. 3/10 for the third of ten nodes)") from None
    if not (1 <= k <= m):
        raise UsageError(f"--part '{spec}': K must be between 1 and M")
    return k, m


def part_tag(k: int, m: int) -> str:
    """The name of part K of M in file and folder names: 'part-003-of-010'."""
    return f"part-{k:03d}-of-{m:03d}"


def manifest_name(part: tuple[int, int] | None) -> str:
    """The manifest a run writes: manifest.json, or a part's manifest.part-K-of-M.json."""
    return f"manifest.{part_tag(*part)}.json" if part else "manifest.json"


def check_run(scenes: int, seed: int) -> None:
    """The checks of --scenes and --seed that generate and submit share."""
    if scenes < 1:
        raise UsageError("--scenes must be at least 1")
    if scenes > MAX_SCENES:
        raise UsageError(f"--scenes must be at most {MAX_SCENES:,} per --out; split larger datasets "
                         "over several --out folders")
    if not 0 <= seed < 2**63:
        raise UsageError("--seed must be a non-negative integer below 2**63")


def select_part(plans: list[ShardPlan], part: tuple[int, int] | None) -> list[ShardPlan]:
    """The shards node K of M renders (all of them without a part)."""
    if not part:
        return list(plans)
    k, m = part
    return [p for i, p in enumerate(plans) if i % m == k - 1]


@dataclass
class RunPlan:
    """Everything decided from the arguments before any file or process exists."""

    scenes: int
    seed: int
    cfg: dict
    part: tuple[int, int] | None
    requested_workers: int | None
    digest: str
    grid: tuple[int, int]
    plans: list[ShardPlan]
    plans_mine: list[ShardPlan]
    my_scenes: set[int] = field(default_factory=set)
    format_version: str = FORMAT_VERSION   # a run resumed from an older format keeps writing it

    @classmethod
    def from_args(cls, scenes: int, seed: int, cfg: dict, *, workers: int | None = None,
                  part: str | None = None, format_version: str = FORMAT_VERSION) -> "RunPlan":
        check_run(scenes, seed)
        parsed = parse_part(part)
        requested = workers if workers is not None else cfg["workers"]["count"]
        if requested is not None and requested < 1:
            raise UsageError("--workers must be at least 1")
        plans = plan_shards(int(scenes), cfg["output"]["splits"], cfg["output"]["shard_size"])
        mine = select_part(plans, parsed)
        return cls(scenes=int(scenes), seed=int(seed), cfg=cfg, part=parsed, requested_workers=requested,
                   digest=config.digest(cfg, seed, scenes, format_version),
                   grid=(cfg["rig"]["grid"], cfg["rig"]["grid"]), plans=plans, plans_mine=mine,
                   my_scenes={i for p in mine for i in p.scenes}, format_version=format_version)

    @property
    def part_tag(self) -> str:
        return part_tag(*self.part) if self.part else ""

    @property
    def manifest_name(self) -> str:
        return manifest_name(self.part)

    def nothing_to_do(self) -> str:
        """The line for a part that gets no shard (more parts than shards)."""
        k, m = self.part
        return (f"part {k}/{m} has nothing to do: this run has {len(self.plans)} shard"
                f"{'s' if len(self.plans) != 1 else ''}, so only parts 1 to {len(self.plans)} of {m} render any")

    @property
    def views_per_scene(self) -> int:
        return self.grid[0] * self.grid[1]

    def plan_of(self) -> dict[int, ShardPlan]:
        return {i: p for p in self.plans_mine for i in p.scenes}


def min_scenes_to_fill(splits: dict) -> int:
    """The smallest scene count from which every split with a share > 0 gets a scene (and
    keeps getting one for every larger count)."""
    used = [k for k, v in splits.items() if v > 0]
    total = float(sum(splits.values()))
    # From 2 / (smallest share) scenes on, every split's range is at least one scene long.
    n = int(2 * total / min(splits[k] for k in used)) + 2

    def fills(count):
        ranges = split_ranges(count, splits)
        return all(ranges[k][1] > ranges[k][0] for k in used)

    while n > 1 and fills(n - 1):
        n -= 1
    return n


def empty_split_warning(scenes: int, splits: dict) -> str | None:
    """One line naming the splits that get no scene from ``--scenes`` (shares of 0 are a
    choice, not named), or None."""
    ranges = split_ranges(scenes, splits)
    empty = [k for k, (a, b) in ranges.items() if b <= a and splits[k] > 0]
    if not empty:
        return None
    total = float(sum(splits.values()))
    shares = "/".join(f"{100 * v / total:.3g}" for v in splits.values())
    names = " and ".join([", ".join(empty[:-1]), empty[-1]] if len(empty) > 1 else empty)
    return (f"--scenes {scenes} leaves {names} empty ({'/'.join(splits)} {shares} by scene index); "
            f"use at least {min_scenes_to_fill(splits)} scenes to fill every split")
