"""Counts in messages: `1 step`, never `1 steps`."""

from vitssl.engine.wording import counted


def test_one_is_singular_and_everything_else_plural():
    assert [counted(n, "step") for n in (0, 1, 2)] == ["0 steps", "1 step", "2 steps"]


def test_irregular_plurals_are_given():
    assert counted(1, "class", "classes") == "1 class" and counted(3, "class", "classes") == "3 classes"
