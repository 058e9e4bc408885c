"""Counts in messages: ``"1 image"``, ``"3 images"``, ``"1 person"``, ``"2 people"`` (the command
line's reports and the pipeline's warnings word them alike)."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, in the plural unless ``n`` is 1: ``plural``, or ``noun`` with an s
    (image, warning, input problem)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def people(n: int) -> str:
    """``"1 person"``, ``"2 people"``."""
    return count(n, "person", "people")
