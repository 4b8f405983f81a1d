"""Kept for task plugins written against ``grain_bench.tasks.base``: the task contract lives in the core now,
``grain_bench.task`` (``Task``, ``EncodedSplit``, ``DataIdentity``, ``load_hub_dataset``)."""

from grain_bench.task import *  # noqa: F401,F403
from grain_bench.task import __all__  # noqa: F401
