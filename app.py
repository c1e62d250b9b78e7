"""RobustScope dashboard entry point: ``streamlit run app.py``.

Renders the shared sidebar (models A/B, dataset, device) once per run, then the chosen page.
"""
from pathlib import Path

import streamlit as st

from pages import common

st.set_page_config(page_title="RobustScope", page_icon="🔬", layout="wide")

HERE = Path(__file__).parent
PAGES = [
    ("pages/models.py", "Models", ":material/inventory_2:"),
    ("pages/attack_lab.py", "Attack Lab", ":material/bolt:"),
    ("pages/representations.py", "Representations (CKA)", ":material/grid_on:"),
    ("pages/saliency.py", "Saliency", ":material/gradient:"),
    ("pages/features.py", "Features", ":material/visibility:"),
    ("pages/generalisation.py", "Generalisation", ":material/shape_line:"),
    ("pages/training.py", "Training", ":material/model_training:"),
    ("pages/results.py", "Results", ":material/folder_open:"),
]

navigation = st.navigation(
    [st.Page(path, title=title, icon=icon) for path, title, icon in PAGES if (HERE / path).exists()]
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
