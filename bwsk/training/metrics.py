"""The run's metrics as JSON lines (`metrics.jsonl`): one object per training step or evaluation, appended and flushed.

A checkpoint records the file's length; resuming truncates the file to it, so the
lines of a resumed run are those of an uninterrupted one (timing fields aside).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from bwsk.errors import SourceError
from bwsk.training.optimizer_step import TrainingDiverged

TIMING_FIELDS = ("tokens_per_s", "step_seconds", "seconds", "peak_memory_bytes")


class MetricsLog:
    """Appends records to `path` (flushed per record); `sync()` makes them durable and returns the length to checkpoint."""

    def __init__(self, path: Path, *, resume_at: int | None = None):
        self.path = path
        try:
            if resume_at is not None:
                if not path.is_file() or path.stat().st_size < resume_at:
                    raise SourceError(f"{path}: shorter than the checkpoint recorded ({resume_at} bytes); cannot resume its metrics")
                with open(path, "r+b") as stream:
                    stream.truncate(resume_at)
            self._stream = open(path, "ab")
        except OSError as error:
            raise SourceError(f"{path}: cannot write ({error.strerror or error})") from None

    def append(self, record: dict[str, Any]) -> None:
        """Write `record`; a NaN or infinite value in it is a diverged run (`TrainingDiverged`), never a line of the file."""
        bad = [key for key, value in record.items() if isinstance(value, float) and not math.isfinite(value)]
        if bad:
            raise TrainingDiverged(f"{bad[0]} is {record[bad[0]]} at step {record.get('step')}; the run stopped, no results were written")
        self._stream.write((json.dumps(record, allow_nan=False) + "\n").encode())
        self._stream.flush()

    def sync(self) -> int:
        """Force the records to disk; the file's length."""
        self._stream.flush()
        os.fsync(self._stream.fileno())
        return self._stream.tell()

    def close(self) -> None:
        self._stream.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every record of a metrics file, in order."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def without_timing(record: dict[str, Any]) -> dict[str, Any]:
    """A record without the fields that depend on the machine's speed (what two identical runs share)."""
    return {key: value for key, value in record.items() if key not in TIMING_FIELDS}
