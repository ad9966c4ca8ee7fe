"""Progress says nothing when stderr is not a terminal."""

from __future__ import annotations

from fpi.presentation.progress import turns_progress


def test_progress_is_silent_off_a_terminal(capsys):
    with turns_progress() as progress:
        progress("reading", 5, 10)
    assert capsys.readouterr().err == ""
