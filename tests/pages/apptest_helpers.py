"""Helpers shared by the AppTest page tests (imported as a plain module from this folder)."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

from engine.jobs import JobStore, run_worker

PAGES = Path(__file__).resolve().parents[2] / "pages"
#: the kinds of element whose text :func:`texts` joins
TEXT_KINDS = ("markdown", "info", "caption", "warning", "subheader")


def page(name: str) -> str:
    """The path of ``pages/NAME.py``, for ``AppTest.from_file``."""
    return str(PAGES / f"{name}.py")


RESULTS = page("results")
APP = str(PAGES.parent / "app.py")


def ok(at: AppTest) -> AppTest:
    """Fail with the exception texts if any element of the last run is an exception."""
    assert not at.exception, [e.value for e in at.exception]
    return at


def run_ok(at: AppTest) -> AppTest:
    """Run the app and fail with the exception texts if any element is an exception."""
    at.run()
    return ok(at)


def texts(at: AppTest, kinds: tuple[str, ...] = TEXT_KINDS) -> str:
    """The text of every element of ``kinds`` on the page, joined by spaces."""
    return " ".join(str(e.value) for kind in kinds for e in at.get(kind))


def refuse_compute(monkeypatch, module, name: str, why: str = "a permalink must not compute") -> None:
    """Make ``module.name`` fail the test (``why``) when it is called."""
    def no_compute(*args, **kwargs):
        raise AssertionError(why)

    monkeypatch.setattr(module, name, no_compute)


def open_result(path: str, key: str) -> AppTest:
    """The page at ``path`` opened with ``?result=KEY`` (a permalink), run without exceptions."""
    at = AppTest.from_file(path, default_timeout=60)
    at.query_params["result"] = key
    return run_ok(at)


def no_checkpoints(monkeypatch, tmp_path) -> None:
    """An empty checkpoints folder: the sidebar has no models (a permalink must not need them)."""
    empty = tmp_path / "no_checkpoints"
    empty.mkdir()
    monkeypatch.setenv("ROBUSTSCOPE_CHECKPOINTS", str(empty))


def finish_job(at: AppTest, job_id: int) -> str:
    """Run the queued job ``job_id`` in a worker and the page again: the page links its result;
    returns the result key."""
    assert run_worker(JobStore(), once=True, lane="analysis") == 1  # the tab is irrelevant to the worker
    run_ok(at)
    key = JobStore().get(job_id).result_key
    assert at.query_params["result"] == key
    return key


def images_in(at: AppTest) -> list:
    """Every ``st.image`` element in the main area (AppTest has no accessor for them)."""
    found = []

    def walk(node):
        if getattr(node, "type", None) == "image":
            found.append(node)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at.main)
    return found
