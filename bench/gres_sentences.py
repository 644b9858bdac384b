"""Sample sentences of the generalized setting (docs/expressions.md): N random sentences of
each family that is not one of the source's, from a generated run.

    python bench/gres_sentences.py OUT --per-family 30 --seed 0

Prints Markdown: one list per family, with the number of targets and relations of each.
"""

from __future__ import annotations

import argparse
import random

from clevr_remv.data import Reader

SOURCE_FAMILIES = ("zero_hop", "spatial_relation", "same_attribute")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root")
    ap.add_argument("--per-family", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    reader = Reader(args.root)
    by_family: dict[str, list[dict]] = {}
    for e in reader.expressions():
        if e["family"] not in SOURCE_FAMILIES:
            by_family.setdefault(e["family"], []).append(e)
    gen = random.Random(args.seed)
    for family in sorted(by_family):
        exprs = by_family[family]
        picked = gen.sample(exprs, min(args.per_family, len(exprs)))
        print(f"\n**{family}** ({len(exprs):,} in the run; {len(picked)} at random)\n")
        for e in picked:
            n = len(e["targets"])
            what = "no target" if n == 0 else f"{n} target{'s' if n > 1 else ''}"
            print(f"- {e['text']} _({what}, {e['num_relations']} relation{'s' if e['num_relations'] != 1 else ''})_")
    reader.close()


if __name__ == "__main__":
    main()
