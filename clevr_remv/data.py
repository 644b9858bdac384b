"""The reading API where users import it from: ``from clevr_remv.data import Reader, RefexpDataset``.

The classes live in :mod:`clevr_remv.read` (``reader``, ``dataset``, ``views``); this module only
names them at the path the README, the examples and existing training code use.
"""

from .read.dataset import RefexpDataset
from .read.reader import Reader
from .read.views import resolve_views

__all__ = ["Reader", "RefexpDataset", "resolve_views"]
