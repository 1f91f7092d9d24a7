"""moto in server mode on 127.0.0.1, for the AWS backends' tests (Kinesis, DynamoDB, S3,
CloudFormation, ...).

The server runs as its own process (``python -m moto.server``), so other processes (a
``playpulse aws run-processor`` under test, a process killed with SIGKILL) reach the same
state. :class:`MotoServer` starts it on a free port and stops it; ``.env`` holds the
variables that point every boto3 / pyarrow client at it (``AWS_ENDPOINT_URL`` and fake
credentials). Standalone, ``python tests/moto_server.py`` prints the endpoint and serves
until interrupted.

The server runs with two fixes for emulator artifacts that made long runs quadratic
(:func:`_patch_moto`); neither changes an answer moto gives.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

REGION = "us-east-1"


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the parent dies
    (prctl PR_SET_PDEATHSIG)."""
    # Not Linux: no prctl; the fixture's close() still stops the server.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoServer:
    """A moto server process on 127.0.0.1 (started by the constructor; :meth:`close`
    stops it). ``endpoint`` is its URL; ``env`` the AWS variables that lead clients to it.
    """

    def __init__(self, timeout_s: float = 30.0) -> None:
        last: Exception | None = None
        for _ in range(3):  # another process may take the free port before moto binds it
            self.port = _free_port()
            self.endpoint = f"http://127.0.0.1:{self.port}"
            self._proc = subprocess.Popen(
                [sys.executable, __file__, "--serve", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                # The server dies with the process that started it, even one killed by
                # a timeout before its fixtures were torn down.
                preexec_fn=_die_with_parent,
            )
            try:
                self._wait(timeout_s)
                break
            except RuntimeError as exc:
                last = exc
                self.close()
        else:
            raise RuntimeError(f"moto server did not start: {last}")
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }

    def _wait(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"exited with {self._proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"no answer on {self.endpoint} within {timeout_s} s")

    def reset(self) -> None:
        """Forget every resource (moto's ``/moto-api/reset``)."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    @staticmethod
    def unique(prefix: str) -> str:
        """A resource name no other test uses (``prefix`` plus 10 hex digits)."""
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    def close(self) -> None:
        """Stop the server process (idempotent)."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def _patch_moto() -> None:
    """Fix two artifacts of moto 5's emulation (in the server process only):

    - A Kinesis shard found its newest sequence number by listing all its records, at
      every record put: O(n) per put, so sending the reference's 200,000 events took
      over 20 minutes. The shard's records are a dict in sequence order, so its first
      and last keys are the same numbers in O(1).
    - moto invokes a function mapped to a stream once per record put, through Docker,
      which is not here: each call failed after about 1 ms and logged the failure.
      Real Lambda polls the stream in batches; ``playpulse aws run-processor`` does that
      here, so the per-record invocation is skipped.
    """
    from moto.awslambda.models import LambdaBackend
    from moto.kinesis.models import Shard

    def first(self: Shard) -> int:
        return next(iter(self.records), 0)

    def last(self: Shard) -> int:
        return next(reversed(self.records), 0)

    def no_invocation(self: LambdaBackend, *args: object, **kwargs: object) -> None:
        return None

    Shard.get_min_sequence_number = first  # type: ignore[method-assign]
    Shard.get_max_sequence_number = last  # type: ignore[method-assign]
    LambdaBackend.send_kinesis_message = no_invocation  # type: ignore[method-assign]


if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    _patch_moto()
    from moto.server import main

    main(sys.argv[2:])
elif __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    server = MotoServer()
    print(server.endpoint, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    os._exit(0)
