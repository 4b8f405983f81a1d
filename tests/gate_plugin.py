"""A test-only method plugin whose runs stop at a gate, so that a test can signal a sweep at a known point.

``gated`` is ``random`` (the built-in baseline) plus a gate: when ``GRAIN_BENCH_TEST_GATE`` names a folder, each run,
right after its teacher is ready and before its first training step, creates ``entered-<pid>-<n>`` there (n counts the
gated runs of this process from 1) and waits until the test creates ``release-<pid>-<n>``. ``COMMAND`` runs
``grain-bench ARGS...`` with the plugin registered like a built-in (``tests/`` must be on ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import sys
import time

from grain_bench.hookspecs import hookimpl
from grain_bench.methods.baselines import RandomUnits

GATE_ENV = "GRAIN_BENCH_TEST_GATE"
COMMAND = [sys.executable, "-c", "import sys, gate_plugin; sys.exit(gate_plugin.main(sys.argv[1:]))"]
MAX_WAIT_S = 300  # a test that died must not leave its sweep waiting for ever


class Gated(RandomUnits):
    """``random`` that waits at the test's gate before training."""

    name = "gated"
    description = "test-only: random units, waiting at a gate before each run trains"
    entered = 0

    def setup(self, state) -> None:
        """Announce the run and wait for the test to release it."""
        super().setup(state)
        folder = os.environ.get(GATE_ENV)
        if not folder:
            return
        Gated.entered += 1
        tag = f"{os.getpid()}-{Gated.entered}"
        with open(os.path.join(folder, f"entered-{tag}"), "w"):
            pass
        release = os.path.join(folder, f"release-{tag}")
        deadline = time.monotonic() + MAX_WAIT_S
        while not os.path.exists(release):
            if time.monotonic() > deadline:
                raise RuntimeError(f"gate {release} was never opened")
            time.sleep(0.01)


@hookimpl
def register_methods(register):
    """The gated method."""
    register(Gated)


def wait_for(path: str, proc, timeout: float = 240.0) -> None:
    """Wait until ``path`` exists; fail if ``proc`` exits first (or after ``timeout`` seconds, a safety net)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f"the sweep exited with {proc.returncode} before {os.path.basename(path)}: "
                                 f"{proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout:g} s")
        time.sleep(0.01)


def main(argv: list[str]) -> int:
    """``grain-bench argv`` with this module loaded as one more built-in plugin."""
    from grain_bench import plugins
    from grain_bench.cli import main as cli_main

    plugins.DEFAULT_PLUGINS = (*plugins.DEFAULT_PLUGINS, __name__)
    return cli_main(argv)

