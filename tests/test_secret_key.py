"""The signing key in the data dir: created once, atomically, even when every web process starts at once."""
from __future__ import annotations

import multiprocessing
import threading

import pytest

from web import _data_dir_secret

ROUNDS, RACERS = 40, 8


def _race(data_dir, start, out) -> None:
    start.wait()
    out.put(_data_dir_secret(data_dir))


# Python 3.12+ warns on every fork from a process with threads (pytest's has some by then). The fork is the
# point of the test (gunicorn forks its web workers), and each child runs only the key's creation.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_web_processes_starting_together_all_get_the_same_full_key(tmp_path):
    context = multiprocessing.get_context("fork")  # like gunicorn's workers: forked, starting at once
    for round_ in range(ROUNDS):
        data_dir = tmp_path / str(round_)
        start, out = context.Barrier(RACERS), context.Queue()
        racers = [context.Process(target=_race, args=(data_dir, start, out)) for _ in range(RACERS)]
        for racer in racers:
            racer.start()
        keys = [out.get(timeout=30) for _ in racers]
        for racer in racers:
            racer.join(timeout=30)
        assert len(set(keys)) == 1 and len(keys[0]) == 64, f"round {round_}: {keys}"
        assert (data_dir / "secret_key").stat().st_mode & 0o777 == 0o600


def test_threads_racing_for_a_new_key_agree(tmp_path):
    for round_ in range(ROUNDS):
        data_dir, start, keys = tmp_path / str(round_), threading.Barrier(RACERS), []
        threads = [threading.Thread(target=lambda: (start.wait(), keys.append(_data_dir_secret(data_dir))))
                   for _ in range(RACERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(keys)) == 1 and len(keys[0]) == 64, f"round {round_}: {keys}"
