"""RefexpDataset and the command line agree: one views parser, Python exceptions from the API
(FileNotFoundError, ValueError), and a view that collates to a [batch, 2] tensor."""

import json

import numpy as np
import pytest

from clevr_remv.data import RefexpDataset
from clevr_remv.read.views import parse_views, resolve_views


def test_one_views_parser_for_api_and_cli():
    assert parse_views("0,0;2,2") == [(0, 0), (2, 2)]
    assert parse_views(" 0,1 ; ") == [(0, 1)]
    assert parse_views("corners") == "corners"
    assert resolve_views("0,0;2,2", (3, 3)) == [(0, 0), (2, 2)]
    for bad in ("0;1", "a,b", "1,2,3"):
        with pytest.raises(ValueError, match="is not center, corners, all"):
            parse_views(bad)
    with pytest.raises(ValueError, match="outside the 3x3 grid"):
        resolve_views("0,0;3,3", (3, 3))


def test_api_raises_python_exceptions(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no manifest.json"):
        RefexpDataset(tmp_path / "nope")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        RefexpDataset(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"shards": []}))
    with pytest.raises(ValueError, match="not a clevr-remv manifest"):
        RefexpDataset(tmp_path)


@pytest.mark.render
def test_cli_view_string_and_collated_view(generated):
    import torch
    from torch.utils.data import DataLoader

    ds = RefexpDataset(generated, split="train", views="0,0;2,2")
    assert {tuple(int(x) for x in ds[i]["view"]) for i in range(len(ds))} == {(0, 0), (2, 2)}
    assert ds.pairs() == RefexpDataset(generated, split="train", views=[(0, 0), (2, 2)]).pairs()
    item = ds[0]
    assert item["view"].shape == (2,) and item["view"].dtype == np.int64
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=None,
                                 sampler=range(4))))
    assert isinstance(batch["view"], torch.Tensor) and tuple(batch["view"].shape) == (4, 2)
    assert [tuple(x) for x in batch["view"].tolist()] == [tuple(int(y) for y in ds[i]["view"]) for i in range(4)]
    with pytest.raises(ValueError, match="outside the 3x3 grid"):
        RefexpDataset(generated, split="train", views="0,0;5,5")
