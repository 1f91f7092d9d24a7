"""Crash test of a processor group: SIGKILL members of a 2-processor consumer group again
and again while they consume (issue #12, "Crash test").

A simulated workload (duplicates, out-of-order and late deliveries at the simulator's
default rates) is validated and appended to a 4-partition SQLite stream, and the stream
file is copied to a second data dir.

- The *reference* run processes the copy alone, without interruption, in a thread of
  this process beside the crash run (its own files and connections).
- The *crash* run starts two ``group_worker.py`` processes, members ``a`` and ``b`` of the
  processor's consumer group (as ``playpulse up --processors 2`` runs them: no processor
  lock of their own, a 2 s session timeout), on the original data dir. Both must get
  partitions and commit. Then, ``KILLS`` times, it SIGKILLs one of them (chosen by the
  seed among the members with work left in their partitions) a random time after it
  was seen committing, and starts it again under the same name. Most restarts come at
  once (the member's leases have not expired: its partitions *come back* to it
  directly); for ``TAKEOVERS`` of the kills, chosen by the seed (one in the first half,
  while every partition has work left), the restart waits until the survivor has
  *taken over* the dead member's partitions (after the session timeout), and the
  restarted member then gets them back from the survivor. After every kill the store's
  committed offsets must have grown since the previous kill and must hold every commit
  the victim reported. Then both members run to the end and must exit 0.

Both runs use the same options (a small ``batch_size``, so there are many commits to
interrupt). Afterwards ``compare_outputs`` of ``test_crash.py`` must find no difference
between the two data dirs (store items, set members, committed offsets, the lake's events
and plays, the quarantine). And the run must have shown both ways a dead member's
partitions go: straight back to it at its restart, and to the survivor, within seconds,
while the survivor still had work of its own (a member with a backlog still rebalances).

The kill moments, victims and restart modes follow a seed that is printed in every
assertion message; set ``PLAYPULSE_GROUP_CRASH_SEED`` to rerun with a given one (the
workload is always the same; the interleaving of the two members is not).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from playpulse.events.codec import validate_event
from playpulse.processor.pipeline import BatchStats, ProcessorOptions
from playpulse.service import close_processor, open_processor
from playpulse.sources.simulator import SimulationConfig, simulate
from playpulse.stream.sqlite import SQLiteStream
from playpulse.testing import load_module

crash = load_module(Path(__file__).with_name("test_crash.py"), "playpulse_tests_processor_crash")

pytestmark = pytest.mark.slow

KILL_SEED = int(
    os.environ.get("PLAYPULSE_GROUP_CRASH_SEED") or random.SystemRandom().randrange(2**32)
)
#: A workload with late events (some 300) at this size.
SIMULATION_SEED = 1
EVENTS = 160_000
#: ``compare_outputs`` and ``committed_offsets`` of ``test_crash.py`` open data dirs with
#: its number of partitions.
NUM_PARTITIONS = crash.NUM_PARTITIONS
#: Records per partition per poll: small, so that there are many commits to interrupt.
BATCH_SIZE = 250
OPTIONS = ProcessorOptions(batch_size=BATCH_SIZE)
MEMBERS = ("a", "b")
KILLS = 12
#: Kills after which the restart waits until the survivor took the victim's partitions.
TAKEOVERS = 2
#: A kill comes a random time of up to this long after the victim was seen committing
#: (less when the work left would not last for the kills still to come).
MAX_KILL_DELAY_S = 0.5
#: About how long a restart takes (the member opens the data dir, gets its partitions
#: and commits a batch) and how long a takeover takes (the session timeout of
#: ``group_worker.py``, a heartbeat interval, a batch, then a restart).
RESTART_S = 0.7
TAKEOVER_S = 2.0 + 2.0 / 6 + 0.3 + RESTART_S
#: Records a member must have left in its partitions to be chosen as the next victim.
MIN_WORK_LEFT = 4 * BATCH_SIZE
#: The whole test gives up after this long.
GLOBAL_DEADLINE_S = 240.0
#: How long a member may take to start and commit, or to take partitions over: the
#: group moves partitions within seconds (a few session timeouts), even under a backlog.
GROUP_STEP_S = 20.0

WORKER = Path(__file__).with_name("group_worker.py")


def context() -> str:
    return f"(kill seed {KILL_SEED}; rerun with PLAYPULSE_GROUP_CRASH_SEED={KILL_SEED})"


def build_stream(path: Path) -> tuple[int, dict[int, int]]:
    """Append the simulated workload, validated, to a new stream at ``path`` in receive
    order (keyed by actor, as the collector does); return the number of records and the
    end offset of each partition."""
    config = SimulationConfig(seed=SIMULATION_SEED).with_target_events(EVENTS)
    records = []
    for sim in simulate(config):
        accepted = validate_event(json.dumps(sim.payload), sim.received_at)
        records.append((accepted.event.actor_id, accepted.payload))
    stream = SQLiteStream(path, num_partitions=NUM_PARTITIONS)
    try:
        for start in range(0, len(records), 1_000):
            stream.append(records[start : start + 1_000])
        infos = stream.partitions()
    finally:
        stream.close()
    counts = [info.count for info in infos]
    assert sum(counts) == len(records)
    assert all(counts), f"a partition got no records: {counts}"
    return len(records), {info.partition: info.end_offset for info in infos}


class Member:
    """One life of a group member: ``group_worker.py`` on ``data_dir`` as a subprocess
    under the name ``name``, its output in ``log_path``; ``args`` are more arguments of
    ``group_worker.py``, ``env`` more environment variables (no other ``PLAYPULSE_*`` one
    reaches it), ``context`` says how to rerun in failure messages.

    It imports its modules at once but opens the data dir only after :meth:`go`."""

    def __init__(
        self,
        data_dir: Path,
        name: str,
        log_path: Path,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        context: Callable[[], str] = context,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.context = context
        environ = {k: v for k, v in os.environ.items() if not k.startswith("PLAYPULSE_")}
        environ.update(env or {})
        environ["PYTHONUNBUFFERED"] = "1"
        command = [
            sys.executable,
            str(WORKER),
            str(data_dir),
            str(NUM_PARTITIONS),
            str(BATCH_SIZE),
            name,
            *args,
        ]
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=data_dir,
                env=environ,
            )

    def lines(self) -> list[str]:
        """Complete lines written so far (a kill may cut the last one short)."""
        return self.log_path.read_text(errors="replace").split("\n")[:-1]

    def tail(self, chars: int = 3000) -> str:
        return f"[{self.log_path.name}]\n" + self.log_path.read_text(errors="replace")[-chars:]

    def go(self) -> None:
        """Let the member open the data dir, join the group and process."""
        assert self.proc.stdin is not None
        # A worker that died already is reported by whoever waits for it next.
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write(b"go\n")
        self._close_stdin()

    def _close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()

    def commits(self, since: int = 0) -> int:
        """Commits reported in the log's lines from line ``since`` on."""
        return sum(line.startswith("commit ") for line in self.lines()[since:])

    def reported(self) -> dict[int, int]:
        """The highest offset the member reported committed, per partition."""
        out: dict[int, int] = {}
        for line in self.lines():
            if line.startswith("commit "):
                _, partition, offset = line.split()
                out[int(partition)] = max(out.get(int(partition), 0), int(offset))
        return out

    def assigned(self, since: int = 0) -> set[int]:
        """Partitions the member reported taking in the log's lines from ``since`` on."""
        out: set[int] = set()
        for line in self.lines()[since:]:
            if line.startswith("assign "):
                out.update(int(p) for p in line.split()[1:])
        return out

    def busy_after_takeover(self, since: int, taken: set[int]) -> bool:
        """Whether the member, after it reported taking some of ``taken`` (in the lines
        from ``since`` on), still committed batches of other partitions: it took them
        over while it had work of its own."""
        lines = self.lines()[since:]
        at = next(
            (
                i
                for i, line in enumerate(lines)
                if line.startswith("assign ") and taken & {int(p) for p in line.split()[1:]}
            ),
            None,
        )
        if at is None:
            return False
        return any(
            line.startswith("commit ") and int(line.split()[1]) not in taken
            for line in lines[at + 1 :]
        )

    def owned(self) -> set[int]:
        """The partitions the member owned after its last reported assign or revoke."""
        out: set[int] = set()
        for line in self.lines():
            if line.startswith("assign "):
                out.update(int(p) for p in line.split()[1:])
            elif line.startswith("revoke "):
                out.difference_update(int(p) for p in line.split()[1:])
        return out

    def wait_for(self, what: str, ready: Callable[[], bool], deadline: float) -> None:
        """Wait until ``ready()`` is true; fail if the member exits or ``deadline`` (a
        ``time.monotonic()`` value) passes first."""
        while not ready():
            if self.proc.poll() is not None and not ready():  # its last lines are in
                pytest.fail(
                    f"member {self.name} exited with {self.proc.returncode} while waiting "
                    f"for {what} {self.context()}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"member {self.name}: no {what} in time {self.context()}:\n{self.tail()}"
                )
            time.sleep(0.01)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._close_stdin()


@dataclass
class Kill:
    """What one kill did (for the failure messages and the printed summary)."""

    victim: str
    #: Seconds since the crash run started.
    at_s: float
    delay_s: float
    wait_for_takeover: bool
    #: Partitions the victim owned when it was killed (from its log).
    owned: list[int]
    #: Records the store had applied right after the kill.
    applied: int
    #: Victim's partitions the survivor took after the kill, before the victim was back.
    taken_over: list[int] | None = None
    #: Partitions the restarted victim got at its first assignment.
    came_back: list[int] | None = None
    #: Whether the survivor took partitions over while it had work of its own.
    survivor_busy: bool | None = None

    def __repr__(self) -> str:
        return (
            f"{self.at_s:.1f}s: {self.victim} +{self.delay_s:.3f}s owned={self.owned} "
            f"applied={self.applied}"
            f"{' wait' if self.wait_for_takeover else ''} "
            f"taken_over={self.taken_over} came_back={self.came_back}"
            f"{' (survivor busy)' if self.survivor_busy else ''}"
        )


def check_after_kill(
    victim: Member,
    victim_name: str,
    previous: dict[int, int],
    offsets: dict[int, int],
    total: int,
    where: str,
) -> None:
    """What must hold once ``victim`` (a :class:`Member`) was SIGKILLed: the store holds
    every commit it reported, no partition's offset went back, the group made progress
    since the previous kill, and records are left to consume."""
    for partition, offset in victim.reported().items():
        assert offsets.get(partition, 0) >= offset, (
            f"partition {partition}: member {victim_name} reported offset {offset} "
            f"committed but the store holds {offsets.get(partition)} after {where}"
        )
    for partition, offset in previous.items():
        assert offsets.get(partition, 0) >= offset, f"offsets went back at {where}"
    assert sum(offsets.values()) > sum(previous.values()), f"no progress at {where}"
    assert sum(offsets.values()) < total, (
        f"nothing left to consume at {where} (the workload is too small for this machine's pace)"
    )


def test_sigkilled_group_members_end_with_the_reference_results(tmp_path: Path) -> None:
    started = time.monotonic()
    deadline = started + GLOBAL_DEADLINE_S
    crash_dir, ref_dir, logs = tmp_path / "crash", tmp_path / "reference", tmp_path / "logs"
    logs.mkdir()
    total, ends = build_stream(crash.settings(crash_dir).stream_path)
    crash.copy_sqlite(crash.settings(crash_dir).stream_path, crash.settings(ref_dir).stream_path)

    # Reference: one processor, alone, uninterrupted, in a thread of this process while
    # the crash run goes on (its own files and connections).
    reference_stats: list[BatchStats] = []
    reference_errors: list[BaseException] = []

    def run_reference() -> None:
        try:
            reference = open_processor(crash.settings(ref_dir), OPTIONS)
            try:
                reference_stats.append(reference.process_available())
            finally:
                close_processor(reference)
        except BaseException as exc:  # reported by the test
            reference_errors.append(exc)

    reference_thread = threading.Thread(target=run_reference, name="reference")
    reference_thread.start()

    rng = random.Random(KILL_SEED)
    # One takeover in the first half of the kills, while every partition has work left.
    early = rng.randrange(KILLS // 2)
    takeover_kills = {early, *rng.sample([k for k in range(KILLS) if k != early], TAKEOVERS - 1)}
    store_path = crash.settings(crash_dir).store_path
    lives = dict.fromkeys(MEMBERS, 0)
    current: dict[str, Member] = {}
    spawned: list[Member] = []
    history: list[Kill] = []

    def spawn(name: str) -> Member:
        member = Member(crash_dir, name, logs / f"{name}-{lives[name]:02d}.log")
        lives[name] += 1
        spawned.append(member)
        return member

    def where(kill: int) -> str:
        return f"kill {kill + 1} {context()}: {history}"

    try:
        for name in MEMBERS:
            current[name] = spawn(name)
        for member in current.values():
            member.go()
        crash_started = time.monotonic()
        # The group shares the work: each member gets partitions and commits.
        for member in current.values():
            step = min(deadline, time.monotonic() + GROUP_STEP_S)
            member.wait_for("first commit", lambda m=member: m.commits() > 0, step)
        offsets: dict[int, int] = {}
        for kill in range(KILLS):
            if time.monotonic() > deadline:
                pytest.fail(f"deadline passed after {kill} kills {context()}: {history}")
            # The victim: a member with work left in the partitions it owns (a member whose
            # partitions are done has no commits left to interrupt).
            offsets_now = crash.committed_offsets(store_path)
            candidates = [
                name
                for name in MEMBERS
                if sum(ends[p] - offsets_now.get(p, 0) for p in current[name].owned())
                >= MIN_WORK_LEFT
            ]
            if not candidates:
                pytest.fail(
                    f"no member has work left before {where(kill)} (the workload is too "
                    f"small for this machine's pace): offsets {offsets_now}"
                )
            victim_name = rng.choice(candidates)
            survivor = current[next(n for n in MEMBERS if n != victim_name)]
            victim = current[victim_name]
            wait_for_takeover = kill in takeover_kills
            # Kill a member at work: wait until it commits a batch (it owns partitions).
            mark = len(victim.lines())
            step = min(deadline, time.monotonic() + GROUP_STEP_S)
            victim.wait_for("commit", lambda v=victim, m=mark: v.commits(m) > 0, step)
            # The next life imports meanwhile; it opens the files only after the kill.
            spare = spawn(victim_name)
            # Spread the kills so that the work left outlasts them at the pace so far
            # (each restart also waits for a commit, each takeover for the timeout).
            applied = sum(crash.committed_offsets(store_path).values())
            pace = max(applied, 1) / (time.monotonic() - crash_started)
            takeovers_left = len([k for k in takeover_kills if k >= kill])
            kills_left = KILLS - kill
            left_s = (
                (total - applied) / pace
                - takeovers_left * TAKEOVER_S
                - (kills_left - takeovers_left) * RESTART_S
            )
            delay = rng.uniform(0.0, min(MAX_KILL_DELAY_S, max(0.0, left_s) / (kills_left + 1)))
            time.sleep(delay)
            if victim.proc.poll() is not None:
                pytest.fail(
                    f"member {victim_name} ended (exit {victim.proc.returncode}) before it "
                    f"was killed; {applied} of {total} records were applied at "
                    f"{where(kill)}\n{victim.tail()}"
                )
            survivor_mark = len(survivor.lines())
            victim.kill()
            previous, offsets = offsets, crash.committed_offsets(store_path)
            record = Kill(
                victim_name,
                time.monotonic() - crash_started,
                delay,
                wait_for_takeover,
                sorted(victim.owned()),
                sum(offsets.values()),
            )
            history.append(record)
            check_after_kill(victim, victim_name, previous, offsets, total, where(kill))

            if wait_for_takeover and record.owned:
                step = min(deadline, time.monotonic() + GROUP_STEP_S)
                survivor.wait_for(
                    f"takeover of {record.owned} from {victim_name}",
                    lambda s=survivor, o=set(record.owned), m=survivor_mark: o <= s.assigned(m),
                    step,
                )
            spare.go()
            current[victim_name] = spare
            step = min(deadline, time.monotonic() + GROUP_STEP_S)
            # Its first commit; or, after the last kills, the survivor may have taken over
            # and finished the victim's partitions before the spare joined: then the spare
            # finds everything done (and checks the totals, as every member does).
            spare.wait_for(
                "first commit, or the whole workload done",
                lambda s=spare: s.commits() > 0 or f"done {total}" in s.lines(),
                step,
            )
            record.taken_over = sorted(set(record.owned) & survivor.assigned(survivor_mark))
            record.survivor_busy = survivor.busy_after_takeover(survivor_mark, set(record.owned))
            first_assign = next((ln for ln in spare.lines() if ln.startswith("assign ")), "")
            record.came_back = [int(p) for p in first_assign.split()[1:]]

        for member in current.values():
            try:
                code = member.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"member {member.name} did not finish in time {context()}")
            assert code == 0, f"member {member.name} exited with {code} {context()}"
            assert f"done {total}" in member.lines(), f"{context()}:\n{member.tail()}"
    except BaseException:
        print(f"kills so far {context()}:\n  " + "\n  ".join(map(repr, history)))
        raise
    finally:
        for member in spawned:
            if member.proc.poll() is None:
                member.kill()
        reference_thread.join()

    crash_s = time.monotonic() - crash_started
    if reference_errors:
        raise reference_errors[0]
    (stats,) = reference_stats
    assert stats.read == total
    # The workload must exercise what a crash could break: duplicates and late events.
    assert stats.duplicates > 0, f"no duplicates in the workload: {stats}"
    assert stats.late > 0, f"no late events in the workload: {stats}"
    summary = (
        f"{total} records; crash run {crash_s:.1f} s (the reference beside it); "
        f"{KILLS} kills {context()}:\n  " + "\n  ".join(map(repr, history))
    )
    print(summary)
    differences = crash.compare_outputs(ref_dir, crash_dir)
    assert not differences, (
        f"after {KILLS} SIGKILLs of group members the results differ from the "
        f"uninterrupted run; {summary}\n" + "\n".join(differences)
    )
    # The kills hit members at work, and both ways a dead member's partitions go happened:
    # to the survivor after the session timeout, and straight back to the restarted member.
    at_work = [k for k in history if k.owned]
    assert len(at_work) >= KILLS // 2, f"few kills hit a member that owned partitions; {summary}"
    assert any(k.taken_over for k in history), f"no takeover by the survivor; {summary}"
    # ... within seconds even when the survivor has a backlog of its own (the kill in the
    # first half waits for a takeover while every partition has work left).
    assert any(k.taken_over and k.survivor_busy for k in history), (
        f"no takeover while the survivor had work of its own; {summary}"
    )
    direct = [k for k in history if k.owned and not k.taken_over and k.came_back == k.owned]
    assert direct, f"no member got its partitions straight back at its restart; {summary}"
