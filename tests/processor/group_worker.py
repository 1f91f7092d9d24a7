"""Run one member of a processor consumer group until the group has caught up, reporting
each commit and each change of its partitions on stdout.

Used by ``test_group_crash.py``, which runs two of these (members ``a`` and ``b``) on one
data dir, SIGKILLs one at random moments and starts it again under the same name.

Usage: ``python group_worker.py DATA_DIR NUM_PARTITIONS BATCH_SIZE MEMBER [TOTAL]``

The stream is the one the settings name (``PLAYPULSE_STREAM_URL`` in the environment
selects Kafka, as ``test_group_crash_kafka.py`` does), else the data dir's SQLite file.
``TOTAL``, for a stream still being appended to while the members consume: the number of
records it will hold in the end (the member is done only once the stream's end offsets
sum to it); without it, the stream is complete when the member opens it.

After its imports it waits for a line on stdin (so the test can start the next worker
while killing the current one, and the restart does not wait for the imports), then
opens the processor as ``playpulse up --processors N`` opens each of its members
(:func:`playpulse.service.open_processor` with ``ProcessorOptions(member=MEMBER)`` and a
2 s session timeout), without the processor lock: in ``playpulse up`` the parent holds
it and the members run under it. It prints, each line flushed at once:

- ``opened`` once the stream, store, lake and quarantine are open;
- ``assign P [P ...]`` once the group gave it partitions and the processor has loaded
  their state (:meth:`~playpulse.processor.pipeline.Processor.on_assign` returned);
- ``revoke P [P ...]`` once it gave partitions up
  (:meth:`~playpulse.processor.pipeline.Processor.on_revoke` returned);
- ``commit PARTITION NEXT_OFFSET`` each time a batch's store transaction has committed
  (so the store holds at least that offset whenever the process dies afterwards);
- ``done N`` when the store's offsets equal the stream's end offsets in every partition
  (``N``: their sum, ``TOTAL`` if given), whichever member applied them; then it leaves
  the group (:meth:`~playpulse.processor.pipeline.Processor.close`), closes everything and
  exits 0.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

from playpulse.config import Settings
from playpulse.processor.pipeline import ProcessorOptions
from playpulse.service import close_processor, open_processor
from playpulse.store.base import StoreBatch

#: How long a member that read nothing waits before it polls again.
IDLE_SLEEP_S = 0.02
#: A member that has not polled for this long loses its partitions to the others.
SESSION_TIMEOUT = timedelta(seconds=2)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    data_dir, num_partitions = Path(sys.argv[1]), int(sys.argv[2])
    batch_size, member = int(sys.argv[3]), sys.argv[4]
    total = int(sys.argv[5]) if len(sys.argv) > 5 else None
    sys.stdin.readline()
    settings = Settings(data_dir=data_dir, num_partitions=num_partitions)
    options = ProcessorOptions(
        batch_size=batch_size, member=member, session_timeout=SESSION_TIMEOUT
    )
    processor = open_processor(settings, options)
    try:
        store = processor.store
        apply, on_assign, on_revoke = store.apply, processor.on_assign, processor.on_revoke

        def apply_and_report(batch: StoreBatch) -> None:
            apply(batch)
            for partition, offset in sorted(batch.offsets.items()):
                say(f"commit {partition} {offset}")

        def assign_and_report(partitions: list[int]) -> dict[int, int]:
            starts = on_assign(partitions)
            say("assign " + " ".join(map(str, partitions)))
            return starts

        def revoke_and_report(partitions: list[int]) -> None:
            on_revoke(partitions)
            say("revoke " + " ".join(map(str, partitions)))

        # The group consumer calls its listener (the processor) through these attributes.
        store.apply = apply_and_report  # type: ignore[method-assign]
        processor.on_assign = assign_and_report  # type: ignore[method-assign]
        processor.on_revoke = revoke_and_report  # type: ignore[method-assign]
        ends = {info.partition: info.end_offset for info in processor.stream.partitions()}
        say("opened")
        while True:
            if processor.process_available(max_batches=1).read:
                continue
            offsets = store.offsets(options.consumer)
            if total is not None and sum(ends.values()) < total:  # still being appended to
                ends = {info.partition: info.end_offset for info in processor.stream.partitions()}
            if offsets == ends and (total is None or sum(ends.values()) == total):
                say(f"done {sum(offsets.values())}")
                processor.close()
                return 0
            time.sleep(IDLE_SLEEP_S)
    finally:
        close_processor(processor)


if __name__ == "__main__":
    sys.exit(main())
