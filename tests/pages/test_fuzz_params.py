"""Absurd URL parameters (issue 23): whatever a user pastes into ``?result=`` and ``?job=`` — huge
or negative numbers, hex of the wrong length, path tricks, lists, control characters — every page
renders without an exception box, and nothing is queued (pages that compute small analyses by
themselves still may: that is their default, not the parameter's doing)."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest

from apptest_helpers import page
from engine.analysis import ResultStore
from engine.jobs import JobStore

pytestmark = pytest.mark.usefixtures("no_autostart")

PAGES = ("representations", "attack_lab", "saliency", "features", "generalisation", "results", "training", "models")
_ATOMS = st.one_of(
    st.integers(-10**30, 10**30).map(str),
    st.text(alphabet="0123456789abcdef", min_size=0, max_size=70),
    st.sampled_from(["../../etc/passwd", "%00", "NaN", "inf", "-0", "1e400", "0x10", " 1", "１２", "🙂", "\x00", ",,,"]),
    st.text(max_size=20),
)
VALUES = st.lists(_ATOMS, min_size=1, max_size=3).map(",".join)


@settings(max_examples=24, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(PAGES), param=st.sampled_from(["result", "job"]), value=VALUES)
def test_absurd_url_parameters_never_raise(name, param, value, tiny_checkpoints):
    at = AppTest.from_file(page(name), default_timeout=120)
    at.query_params[param] = value
    at.run()
    assert not at.exception, (name, param, value, [e.value for e in at.exception])
    assert JobStore().list() == [] and all(entry.error is None for entry in ResultStore().list())
