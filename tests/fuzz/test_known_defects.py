"""The defects fuzzing found in other parts, reproduced (``known_defects.py``).

Each test states what a user needs and fails today for the reason given, as a ``strict``
xfail whose reason is ``_defect(<id>)``; ``strict`` turns the fix into a failure here too, so
that the entry in ``known_defects.py`` and the marker are removed together (the test moves to
``test_fixed_defects.py``) and the fuzz targets count the input as a crash again if it
returns. None is open now.
"""

from __future__ import annotations

from tests.fuzz.known_defects import KNOWN_DEFECTS


def _defect(defect_id: str) -> str:
    (found,) = [d for d in KNOWN_DEFECTS if d.id == defect_id]
    return f"{found.owner}: {found.summary}"


def test_every_known_defect_has_a_unique_id_and_an_owner() -> None:
    ids = [d.id for d in KNOWN_DEFECTS]
    assert len(ids) == len(set(ids))
    assert all(d.owner and d.summary for d in KNOWN_DEFECTS)
