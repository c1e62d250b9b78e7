"""Helpers shared by the AppTest page tests (imported as a plain module from this folder)."""
from streamlit.testing.v1 import AppTest


def run_ok(at: AppTest) -> AppTest:
    """Run the app and fail with the exception texts if any element is an exception."""
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


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
