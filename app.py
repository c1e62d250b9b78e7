"""RobustScope dashboard entry point: ``streamlit run app.py``.

Renders the shared sidebar (models A/B, dataset, device) once per run, then the chosen page.
"""
from pathlib import Path

import streamlit as st

from pages import common

common.freeze_imports()
st.set_page_config(page_title="RobustScope", page_icon="🔬", layout="wide")

HERE = Path(__file__).parent

navigation = st.navigation(
    [st.Page(path, title=title, icon=icon) for path, title, icon in common.PAGES if (HERE / path).exists()]
)
st.sidebar.title("🔬 RobustScope")
try:
    st.session_state[common.SELECTION_KEY] = common.sidebar()
except Exception as exc:  # a broken checkpoint folder must not take the whole app down
    common.show_error(exc)
try:
    navigation.run()
finally:
    st.session_state.pop(common.SELECTION_KEY, None)
