"""Which views of the rig: 'center', 'corners', 'all' or a list; one parser for the API and the command line."""

from __future__ import annotations

from ..scene import lightfield


NAMED = ("center", "centre", "corners", "all")


def parse_views(spec: str):
    """A views string as the command line takes it: a name in :data:`NAMED`, or views as
    'u,v;u,v' (row, column from the top left), as a list of (u, v).  ValueError otherwise."""
    if spec in NAMED:
        return spec
    try:
        out = []
        for item in spec.split(";"):
            if item.strip():
                u, v = (int(x) for x in item.split(","))
                out.append((u, v))
        return out
    except ValueError:
        raise ValueError(f"views '{spec}' is not center, corners, all or views as 'u,v;u,v'") from None


def resolve_views(views, grid) -> list[tuple[int, int]]:
    """"center", "corners", "all", views as 'u,v;u,v', or an iterable of (u, v)."""
    rows, cols = grid
    if isinstance(views, str):
        views = parse_views(views)
    if isinstance(views, str):
        if views in ("center", "centre"):
            return [(rows // 2, cols // 2)]
        if views == "corners":
            return lightfield.corner_views(grid)
        return [(u, v) for u in range(rows) for v in range(cols)]
    out = []
    for view in views:
        try:
            u, v = (int(x) for x in view)
        except (TypeError, ValueError):
            raise ValueError(f"a view is two integers (u, v), got {view!r}") from None
        if not (0 <= u < rows and 0 <= v < cols):
            raise ValueError(f"view ({u}, {v}) is outside the {rows}x{cols} grid")
        if (u, v) in out:
            raise ValueError(f"view ({u}, {v}) is given twice; give each view once")
        out.append((u, v))
    if not out:
        raise ValueError("no view given; give center, corners, all or views as 'u,v;u,v'")
    return out
