"""Append batches to a SQLiteStream forever, acknowledging each record on stdout.

Used by ``test_sqlite_stream.py``, which SIGKILLs this process at a random moment and
then checks that every acknowledged record is in the file.

Usage: ``python crash_writer.py PATH NUM_PARTITIONS RUN SEED``

After ``append`` returns, one line per record is printed and flushed:
``ack PARTITION OFFSET VALUE`` where VALUE is ``RUN:BATCH:INDEX:SIZE:PAYLOAD`` (ASCII),
so the test can also check that a batch is stored completely or not at all.
"""

from __future__ import annotations

import random
import sys

from playpulse.stream import SQLiteStream


def main() -> None:
    path, num_partitions, run, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    rng = random.Random(seed)
    stream = SQLiteStream(path, num_partitions=num_partitions)
    batch_no = 0
    while True:
        # Mostly small batches, sometimes large ones (longer transactions to land in).
        size = rng.choice([1, 2, 5, 10, 50, 300])
        records = []
        for i in range(size):
            payload = "x" * rng.randrange(0, 200)
            value = f"{run}:{batch_no}:{i}:{size}:{payload}".encode()
            records.append((f"user-{rng.randrange(100)}", value))
        appended = stream.append(records)
        for (_, value), a in zip(records, appended, strict=True):
            sys.stdout.write(f"ack {a.partition} {a.offset} {value.decode()}\n")
            sys.stdout.flush()
        batch_no += 1


if __name__ == "__main__":
    main()
