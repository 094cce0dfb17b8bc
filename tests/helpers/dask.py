"""Dask test helpers. Import only after ``distributed`` is known to be installed (the test
modules skip first). Pickled by value: the cluster's workers cannot import this package."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import cloudpickle
import distributed

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class KillOnce(distributed.WorkerPlugin):  # type: ignore[misc]
    """Kills its worker process (SIGKILL) the first time a task whose key names ``step``
    starts executing anywhere in the cluster; ``marker`` remembers it happened."""

    def __init__(self, step: str, marker: str) -> None:
        self.step = step
        self.marker = marker

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish != "executing":
            return
        name = key[0] if isinstance(key, tuple) else key
        if self.step not in str(name):
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
