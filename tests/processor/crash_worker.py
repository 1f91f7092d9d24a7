"""Run the processor on a data dir until it has caught up, reporting each commit on stdout.

Used by ``test_crash.py``, which SIGKILLs this process at random moments and starts it
again on the same data dir.

Usage: ``python crash_worker.py DATA_DIR NUM_PARTITIONS BATCH_SIZE``

After its imports it waits for a line on stdin (so the test can start the next worker
while killing the current one, and the restart does not wait for the imports), then
opens the processor the way ``playpulse up`` does
(:func:`playpulse.service.open_processor`, holding :func:`playpulse.service.processor_lock`
as ``playpulse process`` does) and prints, each line flushed at once:

- ``opened`` once the stream, store, lake and quarantine are open;
- ``commit PARTITION NEXT_OFFSET`` each time a batch's store transaction has committed
  (so the store must hold at least that offset whenever the process dies afterwards);
- ``done N`` when the stream holds nothing more (``N``: the sum of the committed offsets);
  then it closes everything and exits 0;
- ``locked`` if another process holds the processor lock (a killed worker must not);
  then it exits 3.
"""

from __future__ import annotations

import sys
from pathlib import Path

from playpulse.config import Settings
from playpulse.processor.pipeline import ProcessorOptions
from playpulse.service import close_processor, open_processor, processor_lock
from playpulse.store.base import StoreBatch


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    data_dir, num_partitions, batch_size = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    sys.stdin.readline()
    settings = Settings(data_dir=data_dir, num_partitions=num_partitions)
    options = ProcessorOptions(batch_size=batch_size)
    with processor_lock(settings) as mine:
        if not mine:
            say("locked")
            return 3
        processor = open_processor(settings, options)
        try:
            store = processor.store
            apply = store.apply

            def apply_and_report(batch: StoreBatch) -> None:
                apply(batch)
                for partition, offset in sorted(batch.offsets.items()):
                    say(f"commit {partition} {offset}")

            store.apply = apply_and_report  # type: ignore[method-assign]
            say("opened")
            while processor.process_available(max_batches=1).read:
                pass
            say(f"done {sum(store.offsets(options.consumer).values())}")
            return 0
        finally:
            close_processor(processor)


if __name__ == "__main__":
    sys.exit(main())
