"""The worker's heartbeat thread: it beats the trial being evaluated every interval, and never a trial whose
evaluation has ended."""

from __future__ import annotations

import threading
import time

from nas.search.study import Heartbeat


class SlowBeats:
    """A storage keeping heartbeats every `interval` seconds, whose writes take `write_seconds`."""

    def __init__(self, interval: float, write_seconds: float = 0.0) -> None:
        self.interval, self.write_seconds = interval, write_seconds
        self.beats: list[tuple[int, float]] = []  # (trial id, when the write ended)
        self.writing = threading.Event()

    def get_heartbeat_interval(self) -> float:
        return self.interval

    def record_heartbeat(self, trial_id: int) -> None:
        self.writing.set()
        time.sleep(self.write_seconds)
        self.beats.append((trial_id, time.monotonic()))
        self.writing.clear()


def test_the_trial_being_evaluated_is_beaten_every_interval_and_none_after_its_evaluation() -> None:
    storage = SlowBeats(interval=0.05)
    heartbeat = Heartbeat(storage)
    for trial_id in (3, 4):
        start = time.monotonic()
        with heartbeat.beating(trial_id):
            time.sleep(0.32)
        ended = time.monotonic()
        mine = [when for t, when in storage.beats if t == trial_id]
        assert 3 <= len(mine) <= 7  # every 0.05 s, the first one interval after the start (the proposal's beat)
        assert mine[0] - start >= 0.05 and all(when <= ended for when in mine)
        assert [t for t, _ in storage.beats][-len(mine) :] == [trial_id] * len(mine)
    time.sleep(0.15)
    assert all(t in (3, 4) for t, _ in storage.beats) and storage.beats[-1][1] <= ended  # nothing after the end
    heartbeat.close()
    assert heartbeat._thread is not None and not heartbeat._thread.is_alive()


def test_leaving_during_a_beat_waits_for_it() -> None:
    storage = SlowBeats(interval=0.02, write_seconds=0.2)
    heartbeat = Heartbeat(storage)
    with heartbeat.beating(7):
        assert storage.writing.wait(1.0)  # a beat is being written
    assert storage.beats and storage.beats[-1][0] == 7  # written before `beating` returned
    count = len(storage.beats)
    time.sleep(0.3)
    assert len(storage.beats) == count
    heartbeat.close()


def test_the_proposals_beat_is_recorded_at_once_and_only_where_heartbeats_are_kept() -> None:
    storage = SlowBeats(interval=60)
    Heartbeat(storage).beat_once(5)
    assert [t for t, _ in storage.beats] == [5]
    storage.interval = 0  # a storage created without a heartbeat interval
    Heartbeat(storage).beat_once(6)
    assert [t for t, _ in storage.beats] == [5]


def test_a_storage_without_heartbeats_starts_no_thread() -> None:
    heartbeat = Heartbeat(object())
    heartbeat.beat_once(1)
    with heartbeat.beating(1):
        pass
    heartbeat.close()
    assert heartbeat._thread is None
