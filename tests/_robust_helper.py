"""Run ``l2bn.cli.main`` and stop it at an exact point, for the robustness tests (tests/robust).

    python tests/_robust_helper.py sweep --optimizer adam ...

does what ``python -m l2bn sweep --optimizer adam ...`` does, except that at the ``L2BN_TEST_N``-th
``os.replace`` whose destination ends with ``L2BN_TEST_SUFFIX`` (``L2BN_TEST_WHEN``: ``before`` or
``after`` the rename) it

* ``L2BN_TEST_ACTION=kill``: sends itself SIGKILL, like a crash or ``kill -9`` at that instant;
* ``L2BN_TEST_ACTION=pause``: writes the file ``$L2BN_TEST_GO.waiting`` and waits (up to two
  minutes) until the file ``$L2BN_TEST_GO`` exists, then goes on.

Every ``l2bn`` file (results, their sidecars, checkpoints and theirs) reaches its name through
``os.replace`` (``store.atomic_write``), so these are the points where a crash is most likely to
leave a half-written state.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def _install() -> None:
    action = os.environ["L2BN_TEST_ACTION"]
    when = os.environ["L2BN_TEST_WHEN"]
    suffix = os.environ["L2BN_TEST_SUFFIX"]
    target = int(os.environ["L2BN_TEST_N"])
    real_replace = os.replace
    seen = 0

    def act() -> None:
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        go = Path(os.environ["L2BN_TEST_GO"])
        Path(f"{go}.waiting").write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    def replace(src, dst, *args, **kwargs):  # noqa: ANN001, ANN202
        nonlocal seen
        hit = str(dst).endswith(suffix)
        if hit:
            seen += 1
        if hit and seen == target and when == "before":
            act()
        real_replace(src, dst, *args, **kwargs)
        if hit and seen == target and when == "after":
            act()

    os.replace = replace


if __name__ == "__main__":
    _install()
    from l2bn.cli import main

    sys.exit(main(sys.argv[1:]))
