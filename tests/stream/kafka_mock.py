"""librdkafka's mock Kafka cluster, driven through ctypes (a test-only helper).

confluent-kafka's Python API does not wrap librdkafka's mock cluster API
(``rdkafka_mock.h``: ``rd_kafka_mock_cluster_new``, ``rd_kafka_mock_broker_set_down`` ...),
but the confluent-kafka wheel carries librdkafka as a shared library
(``confluent_kafka.libs/librdkafka-*.so.1``, the one ``cimpl*.so`` links against) that
exports it. :class:`MockCluster` loads that library with ctypes, creates a handle of its
own, and starts a mock cluster on it: brokers listening on 127.0.0.1 (ephemeral ports)
that any client in this or another process reaches at :attr:`MockCluster.bootstrap`.

Run ``python3 tests/stream/kafka_mock.py [BROKERS]`` to start one in its own process: it
prints the bootstrap servers on its first line and serves until its stdin closes or it
gets SIGTERM/SIGINT (what a test that runs processors in other processes uses).
"""

from __future__ import annotations

import ctypes
import glob
import os
import signal
import sys
import threading
import uuid
from types import TracebackType

import confluent_kafka

#: librdkafka API keys (the Kafka protocol's) used with :meth:`MockCluster.push_request_errors`.
PRODUCE_API_KEY = 0
#: The OffsetCommit API key.
OFFSET_COMMIT_API_KEY = 8
#: RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS.
ERR_REBALANCE_IN_PROGRESS = 27
#: RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE (not about rebalancing).
ERR_OFFSET_METADATA_TOO_LARGE = 12
#: RD_KAFKA_RESP_ERR_NOT_LEADER_OR_FOLLOWER (retriable).
ERR_NOT_LEADER_OR_FOLLOWER = 6
#: RD_KAFKA_RESP_ERR_MESSAGE_TOO_LARGE (not retriable).
ERR_MESSAGE_TOO_LARGE = 10


def librdkafka_path() -> str:
    """The librdkafka shared library confluent-kafka's extension uses (in the wheel)."""
    here = os.path.dirname(confluent_kafka.__file__)
    candidates = sorted(
        glob.glob(os.path.join(here, "..", "confluent_kafka.libs", "librdkafka*.so*"))
        + glob.glob(os.path.join(here, "librdkafka*.so*"))
        + glob.glob(os.path.join(here, ".dylibs", "librdkafka*.dylib"))
    )
    if not candidates:
        raise RuntimeError(f"no librdkafka shared library next to {here}")
    return os.path.realpath(candidates[0])


def _load() -> ctypes.CDLL:
    lib = ctypes.CDLL(librdkafka_path())
    p, c_int, c_str = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    i32, i16 = ctypes.c_int32, ctypes.c_int16
    sigs: dict[str, tuple[list[object], object]] = {
        "rd_kafka_conf_new": ([], p),
        "rd_kafka_conf_set": ([p, c_str, c_str, c_str, ctypes.c_size_t], c_int),
        "rd_kafka_new": ([c_int, p, c_str, ctypes.c_size_t], p),
        "rd_kafka_destroy": ([p], None),
        "rd_kafka_mock_cluster_new": ([p, c_int], p),
        "rd_kafka_mock_cluster_destroy": ([p], None),
        "rd_kafka_mock_cluster_bootstraps": ([p], c_str),
        "rd_kafka_mock_topic_create": ([p, c_str, c_int, c_int], c_int),
        "rd_kafka_mock_broker_set_down": ([p, i32], c_int),
        "rd_kafka_mock_broker_set_up": ([p, i32], c_int),
        "rd_kafka_mock_partition_set_leader": ([p, c_str, i32, i32], c_int),
        "rd_kafka_mock_push_request_errors_array": (
            [p, i16, ctypes.c_size_t, ctypes.POINTER(c_int)],
            None,
        ),
        "rd_kafka_mock_clear_request_errors": ([p, i16], None),
        "rd_kafka_mock_group_initial_rebalance_delay_ms": ([p, i32], None),
    }
    for name, (argtypes, restype) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = restype
    return lib


class MockClusterError(RuntimeError):
    """A mock cluster call failed (librdkafka returned an error code)."""


class MockCluster:
    """A librdkafka mock cluster of ``num_brokers`` brokers (ids 1 to ``num_brokers``)
    on 127.0.0.1, living in this process until :meth:`close`.

    Topics a client asks for are created on first use with 4 partitions (the mock's
    default); :meth:`create_topic` makes one with another count. Group rebalances start
    after ``initial_rebalance_delay_ms`` (the mock's default is 3 s).
    """

    def __init__(self, num_brokers: int = 3, *, initial_rebalance_delay_ms: int = 50) -> None:
        self._lib = _load()
        errstr = ctypes.create_string_buffer(512)
        conf = self._lib.rd_kafka_conf_new()
        # A handle only to own the cluster: it talks to no broker.
        for key, value in {"log_level": "0"}.items():
            if self._lib.rd_kafka_conf_set(conf, key.encode(), value.encode(), errstr, 512):
                raise MockClusterError(errstr.value.decode())
        self._rk = self._lib.rd_kafka_new(0, conf, errstr, 512)  # RD_KAFKA_PRODUCER
        if not self._rk:
            raise MockClusterError(f"rd_kafka_new: {errstr.value.decode()}")
        self._mcluster = self._lib.rd_kafka_mock_cluster_new(self._rk, num_brokers)
        if not self._mcluster:
            self._lib.rd_kafka_destroy(self._rk)
            raise MockClusterError("rd_kafka_mock_cluster_new failed")
        self.num_brokers = num_brokers
        self.bootstrap: str = self._lib.rd_kafka_mock_cluster_bootstraps(self._mcluster).decode()
        self._lib.rd_kafka_mock_group_initial_rebalance_delay_ms(
            self._mcluster, initial_rebalance_delay_ms
        )

    def _check(self, what: str, err: int) -> None:
        if err:
            raise MockClusterError(f"{what}: librdkafka error {err}")

    def create_topic(self, topic: str, num_partitions: int, replication_factor: int = 3) -> None:
        """Create ``topic`` with ``num_partitions`` partitions."""
        rf = min(replication_factor, self.num_brokers)
        self._check(
            f"create topic {topic}",
            self._lib.rd_kafka_mock_topic_create(
                self._mcluster, topic.encode(), num_partitions, rf
            ),
        )

    def new_topic(self, num_partitions: int = 4) -> str:
        """Create a topic with a fresh unique name and ``num_partitions`` partitions
        (replicated on up to 3 brokers); return its name."""
        topic = f"events-{uuid.uuid4().hex[:12]}"
        self.create_topic(topic, num_partitions)
        return topic

    def set_down(self, broker_id: int) -> None:
        """Disconnect broker ``broker_id`` and refuse new connections to it."""
        self._check(
            f"set broker {broker_id} down",
            self._lib.rd_kafka_mock_broker_set_down(self._mcluster, broker_id),
        )

    def set_up(self, broker_id: int) -> None:
        """Let broker ``broker_id`` accept connections again."""
        self._check(
            f"set broker {broker_id} up",
            self._lib.rd_kafka_mock_broker_set_up(self._mcluster, broker_id),
        )

    def set_leader(self, topic: str, partition: int, broker_id: int) -> None:
        """Make ``broker_id`` the leader of ``topic``'s ``partition``."""
        self._check(
            f"set leader of {topic}[{partition}]",
            self._lib.rd_kafka_mock_partition_set_leader(
                self._mcluster, topic.encode(), partition, broker_id
            ),
        )

    def push_request_errors(self, api_key: int, errors: list[int]) -> None:
        """Answer the next ``len(errors)`` requests of ``api_key`` (to any broker) with
        these error codes, in order."""
        array = (ctypes.c_int * len(errors))(*errors)
        self._lib.rd_kafka_mock_push_request_errors_array(
            self._mcluster, api_key, len(errors), array
        )

    def clear_request_errors(self, api_key: int) -> None:
        """Forget the errors pushed for ``api_key`` and not used yet."""
        self._lib.rd_kafka_mock_clear_request_errors(self._mcluster, api_key)

    def close(self) -> None:
        """Stop the brokers and the cluster's thread (idempotent)."""
        if self._mcluster:
            self._lib.rd_kafka_mock_cluster_destroy(self._mcluster)
            self._mcluster = None
        if self._rk:
            self._lib.rd_kafka_destroy(self._rk)
            self._rk = None

    def __enter__(self) -> MockCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def main(argv: list[str]) -> int:
    """Serve a mock cluster until stdin closes or SIGTERM/SIGINT; print its bootstrap
    servers first."""
    brokers = int(argv[1]) if len(argv) > 1 else 3
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with MockCluster(brokers) as cluster:
        print(cluster.bootstrap, flush=True)

        def wait_stdin() -> None:
            sys.stdin.read()
            stop.set()

        threading.Thread(target=wait_stdin, daemon=True).start()
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
