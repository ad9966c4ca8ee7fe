"""Progress says nothing when stderr is not a terminal; at one, no bar is drawn full before the total is
known, a phase's timer stops when the next starts, and the first line comes before the model loads."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from fpi.presentation.progress import CountColumn, KnownBarColumn, Phases, announce, turns_progress


def test_progress_is_silent_off_a_terminal(capsys):
    with turns_progress() as progress:
        progress("reading", 5, 10)
    assert capsys.readouterr().err == ""


def _progress() -> Progress:
    return Progress(KnownBarColumn(), CountColumn(), console=Console(file=io.StringIO(), width=100), auto_refresh=False)


def test_a_count_without_a_total_is_no_bar_and_says_so_far():
    progress = _progress()
    task = progress.add_task("reading", total=None)
    progress.update(task, completed=74306)
    shown = progress.tasks[0]
    assert str(KnownBarColumn().render(shown)) == ""
    assert str(CountColumn().render(shown)) == "74,306 so far"
    progress.update(task, total=80000)
    assert str(CountColumn().render(progress.tasks[0])) == "74,306/80,000"


def test_a_phase_ends_and_its_timer_stops_when_the_next_starts():
    progress = _progress()
    phases = Phases(progress)
    phases("reading", 5000, None)
    phases("preparing", 0, 5000)
    reading, preparing = progress.tasks
    assert reading.finished and reading.total == 5000 and reading.stop_time is not None
    assert not preparing.finished and preparing.stop_time is None


def test_the_first_line_names_what_is_read(capsys):
    announce("spans.jsonl", enabled=True)
    assert "reading spans.jsonl …" in capsys.readouterr().err
    announce("spans.jsonl", enabled=False)
    assert capsys.readouterr().err == ""
