"""The teacher cache: fine-tuned teachers kept per task data, backbone, teacher recipe and seed, verified on read.

The cache is one folder per user (``teacher_folder()``: ``GRAIN_BENCH_HOME/teachers``, or ``--teacher-cache``), so
every results folder of this user shares its teachers. An entry is ``<folder>/<key>/`` with ``model.safetensors`` and
``meta.json`` (scores, quality, the weights' SHA-256). Entries are written to a temporary folder and renamed into
place; a corrupt, incomplete or non-finite entry is moved aside and rebuilt. A teacher that did not learn
(``not_learned``) is never cached. One process trains a key while the others wait for it (``TeacherCache.lock``: a
file lock per key). Results folders from before the per-user cache keep their ``RESULTS/teachers``: it is read after
the user's folder (``fallbacks``), never written. ``TeacherCache`` is the object the harness and the benchmarks hold:
the entries on disk and the teachers this process already has.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from tqdm.auto import tqdm

from grain_bench.files import RunWarnings, ordinary_permissions, sha256_of_file
from grain_bench.types import Recipe, canonical_json

#: the folder under ``GRAIN_BENCH_HOME`` that holds the user's teachers
FOLDER = "teachers"


def teacher_folder(given: str | None = None) -> str:
    """The teacher cache's folder, absolute: ``given`` (``--teacher-cache``, ``~`` expanded), else the user's
    ``GRAIN_BENCH_HOME/teachers`` (``~/.cache/grain-bench/teachers``)."""
    from grain_bench.files import grain_bench_home

    return os.path.abspath(os.path.expanduser(given) if given else os.path.join(grain_bench_home(), FOLDER))


class TeacherCache:
    """The fine-tuned teachers of one folder (the user's, ``teacher_folder()``): verified entries on disk and the
    teachers this process holds, so that every run with the same key shares one teacher and a later sweep, in any
    results folder, loads it. ``fallbacks``: older folders read after this one (never written)."""

    def __init__(self, folder: str, fallbacks: tuple[str, ...] = ()):
        self.folder = folder
        self.fallbacks = tuple(f for f in fallbacks if os.path.abspath(f) != os.path.abspath(folder))
        self._held: dict[str, tuple[Any, dict]] = {}

    def held(self, key: str) -> tuple[Any, dict] | None:
        """(model, meta) of a teacher this process already has, or None."""
        return self._held.get(key)

    def hold(self, key: str, model, meta: dict) -> None:
        """Keep (``model``, ``meta``) for the rest of this process."""
        self._held[key] = (model, meta)

    def has(self, key: str) -> bool:
        """Whether an entry of ``key`` is on disk (not yet verified)."""
        return any(os.path.isdir(os.path.join(folder, key)) for folder in (self.folder, *self.fallbacks))

    def load(self, key: str, model) -> dict | None:
        """Load a verified entry's weights into ``model`` and return its meta; None when there is none (a corrupt one
        is moved aside, to be rebuilt). The user's folder first, then the fallbacks."""
        for folder in (self.folder, *self.fallbacks):
            meta = load_cached_teacher(folder, key, model)
            if meta is not None:
                return meta
        return None

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold the lock of ``key`` (``<folder>/.<key>.lock``) while loading or training it, so that two processes
        asking for one teacher train it once: the second waits, says so, then loads what the first cached. A folder
        that cannot hold the lock (read-only) is used without one."""
        from filelock import FileLock, Timeout

        try:
            os.makedirs(self.folder, exist_ok=True)
            lock = FileLock(os.path.join(self.folder, f".{key}.lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                tqdm.write(f"grain-bench: waiting for another process training teacher {key} ({self.folder})",
                           file=sys.stderr)
                lock.acquire()
        except OSError:  # no lock to take here: the atomic rename still keeps the entry whole
            yield
            return
        try:
            yield
        finally:
            lock.release()

    def save(self, key: str, model, meta: dict, problem: str | None = None) -> None:
        """Write the entry of a teacher that learned; ``problem`` (``not_learned``'s reason) keeps it out of the
        cache. Either way, what a reader should know goes into ``meta["warnings"]`` (a full or read-only disk costs
        the cache, not the run)."""
        warnings = RunWarnings(meta.setdefault("warnings", []))
        if problem:  # kept for this process's runs, never cached: the next sweep trains it again
            warnings.add(f"{problem}; the teacher was not cached")
            return
        warnings.store("the teacher could not be cached", lambda: save_teacher(self.folder, key, model, meta))


def teacher_key(task, data: str, backbone: str, recipe: Recipe, seed: int) -> str:
    """Cache key of a fine-tuned teacher: task (and version), data identity (``RunSpec.data``: a content hash or a hub
    commit, so an edited data file trains a new teacher), backbone, teacher recipe, seed."""
    content = {"task": task.name, "version": task.version, "data": data, "backbone": backbone,
               "recipe": recipe.teacher_dict(), "seed": seed}
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()[:16]


def load_cached_teacher(cache_dir: str, key: str, model) -> dict | None:
    """Load weights into ``model`` from a verified cache entry; None when absent or corrupt (then it is retrained)."""
    from safetensors.torch import load_file

    from grain_bench.distill import check_finite_weights

    folder = os.path.join(cache_dir, key)
    meta_path = os.path.join(folder, "meta.json")
    weights = os.path.join(folder, "model.safetensors")
    if not os.path.lexists(folder):
        return None
    try:
        missing = [os.path.basename(p) for p in (meta_path, weights) if not os.path.isfile(p)]
        if missing:
            raise ValueError(f"{' and '.join(missing)} missing")
        with open(meta_path) as handle:
            meta = json.load(handle)
        if meta.get("sha256") != sha256_of_file(weights):
            raise ValueError("checksum mismatch")
        model.load_state_dict(load_file(weights), strict=True)
        check_finite_weights(model, "the cached teacher")
    except Exception as exc:  # a corrupt or incomplete entry is moved aside (so it can be rebuilt), never trusted
        bad = folder + f".corrupt-{int(time.time())}"
        os.replace(folder, bad)
        tqdm.write(f"teacher cache {folder} is corrupt ({exc}); moved to {bad}, retraining", file=sys.stderr)
        return None
    return meta


def save_teacher(cache_dir: str, key: str, model, meta: dict) -> None:
    """Write a cache entry atomically (temporary folder, then rename)."""
    from safetensors.torch import save_file

    os.makedirs(cache_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir)
    try:
        weights = os.path.join(tmp, "model.safetensors")
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, weights)
        meta = {**meta, "sha256": sha256_of_file(weights)}
        with open(os.path.join(tmp, "meta.json"), "w") as handle:
            json.dump(meta, handle, indent=1)
        ordinary_permissions(tmp)
        final = os.path.join(cache_dir, key)
        if os.path.exists(final):  # another worker finished first: keep theirs
            shutil.rmtree(tmp)
            return
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def not_learned(task, scores: Mapping[str, float | None], chance: Mapping[str, float | None]) -> str | None:
    """Why a fine-tuned teacher's score says it learned nothing (not better than a trivial predictor), or None."""
    metric = task.primary_metric
    floor = chance.get(metric)
    if floor is None or metric not in scores:
        return None
    score = scores[metric]
    learned = score is not None and (score > floor if task.higher_is_better(metric) else score < floor)
    if learned:
        return None
    return f"the teacher scores {metric} {score:.4f}, no better than a trivial predictor ({floor:.4f})"
