"""Models page part: a checkpoint's robustness report, RobustBench-style — clean, PGD, AutoAttack
attack by attack, the gradient-masking checks and an ε-sweep, with an imported RobustBench model's
leaderboard figures beside ours. Rendering only; the numbers come from one ``engine.analysis``
request (:class:`~engine.analysis.ReportRequest`): a stored result at once, else computed here or as
a background job (measured estimate), reopened from ``?result=<key>``.

**Measure report** asks for the quick preset (APGD-CE + APGD-T, an upper bound on robust accuracy;
about a minute for 100 MNIST images on two CPU cores); **Full AutoAttack report** asks for the full
one (standard AutoAttack and every masking check), which the *auto* run mode sends to the background
when its measured estimate is long."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from engine import data as edata
from engine.analysis import ModelRef
from engine.analysis.kinds.report import ReportRequest, default_threat
from engine.attacks import AUTOATTACK_VERSIONS
from engine.attacks.report import png_export_available
from engine.catalogue import NORMS, norm_symbol
from engine.errors import RobustScopeError
from engine.selection import incompatibility, training_method
from pages import analysis_ui, common

KIND = ReportRequest.kind
SIZES = [16, 32, 64, 100, 128, 256, 512, 1000]
STATUS_ICON = {"pass": "✅ pass", "flag": "⚠️ flag", "skipped": "— skipped"}


def report_section(sel) -> None:
    """The "Robustness report" section: pick model A or B, images and ε, run here or in the
    background (with progress and a Stop button), then tables, the ε-sweep plot and downloads; a
    permalinked (``?result=<key>``) or background (``?job=<id>``) report shows without running."""
    st.divider()
    st.subheader("Robustness report")
    st.caption("Clean accuracy, PGD, AutoAttack (APGD-CE → APGD-T → FAB-T → Square, each on the points still "
               "robust; Croce & Hein 2020), the gradient-masking checks (Athalye et al. 2018; Carlini et al. "
               "2019) and an ε-sweep, on the first test images. AutoAttack is the field's standard figure; "
               "PGD alone can overstate robustness. **Measure report** gives the quick report (quick: "
               "APGD-CE + APGD-T, AutoAttack's first two attacks — an upper bound on robust accuracy, not "
               "AutoAttack — and the masking checks that need no Square); **Full AutoAttack report** gives "
               "the standard AutoAttack and every check.")
    shown = linked_report()
    asked, computed = report_form(sel)
    if asked:  # the new report replaces the linked one (queued: its job's progress shows next run)
        shown = computed
    if shown is not None:
        analysis_ui.show_permalink(shown)
        show_report(shown.value())


def linked_report():
    """The report the URL names (``?result=<key>``, or a finished ``?job=<id>``: progress while it
    runs); None when it names another view of the Models page (the AdvProp comparison)."""
    if analysis_ui.url_kind() not in (None, KIND):
        return None
    return analysis_ui.permalinked(KIND) or analysis_ui.job_status(KIND)


def report_form(sel) -> tuple[bool, object]:
    """The report's settings and its Measure button: ``(asked, result)``, the result when it is
    stored or computed here, None when queued, failed (the error shown) or not asked for."""
    slots = {slot: m for slot, m in (("A", sel.a), ("B", sel.b)) if m is not None}
    if not slots:
        st.info("Choose a model in the sidebar to measure its robustness report.")
        return False, None
    try:
        spec = edata.get_spec(sel.dataset)
    except RobustScopeError as exc:
        common.show_error(exc)
        return False, None
    cols = st.columns([2, 1, 1, 1])
    slot = cols[0].radio("Model", list(slots), horizontal=True, key="report_slot",
                         format_func=lambda s: f"{s}: {slots[s].name}")
    loaded = slots[slot]
    problem = incompatibility(loaded.card, spec)
    if problem:
        st.warning(f"Model {slot}: {problem}")
        return False, None
    norm0, eps0 = default_threat(loaded.card, sel.dataset)
    norm = cols[1].selectbox("Norm", list(NORMS), index=list(NORMS).index(norm0),
                             key=f"report_norm_{slot}_{sel.dataset}", format_func=norm_symbol)
    eps = cols[2].number_input("ε", 0.0, None, default_threat(loaded.card, sel.dataset, norm)[1],
                               1 / 255 if norm == "linf" else 0.05, format="%.4f",
                               key=f"report_eps_{slot}_{sel.dataset}_{norm}")
    n = common.image_slider(cols[3], "Images", sel.dataset, SIZES, 100, key="report_n",
                            help="AutoAttack on CPU takes time: start small (RobustBench uses 10,000)")
    opts = st.columns([1, 1, 2])
    version = opts[0].selectbox("AutoAttack version (full report)", list(AUTOATTACK_VERSIONS), key="report_version",
                                help="the full report's AutoAttack; the quick report runs APGD-CE + APGD-T")
    masking = opts[1].checkbox("Gradient-masking checks", True, key="report_masking")
    other = "B" if slot == "A" else "A"
    source = slots.get(other)
    use_source = False
    if source is not None and training_method(source.card) == "standard" and not incompatibility(source.card, spec):
        use_source = opts[2].checkbox(f"Transfer check from {other} (standard)", True, key="report_transfer",
                                      disabled=not masking)
    run_cols = st.columns([1, 1, 1, 3])
    mode = analysis_ui.mode_picker(run_cols[3], "report_mode")
    quick = run_cols[0].button("Measure report", type="primary", key="report_run",
                               help="the quick report: APGD-CE + APGD-T (an upper bound on robust accuracy, not "
                                    "AutoAttack), the masking checks without Square, a 4-point ε-sweep")
    full = run_cols[1].button("Full AutoAttack report", key="report_full",
                              help="standard AutoAttack (APGD-CE → APGD-T → FAB-T → Square) and every masking "
                                   "check; Run auto sends it to the background when its measured estimate is long")
    if not (quick or full):
        return False, None
    sources = [source] if use_source and masking else []
    preset = {"preset": "full", "version": version} if full else {"preset": "quick"}
    request = ReportRequest(model=ModelRef.from_loaded(loaded), dataset=sel.dataset, eps=float(eps), norm=norm,
                            n=int(n), masking=masking, source=tuple(ModelRef.from_loaded(m) for m in sources),
                            **preset)
    label = "Full AutoAttack report" if full else "Quick report (APGD-CE + APGD-T)"
    try:
        with common.stop_button(run_cols[2], "report_stop", "interrupts the report"):
            return True, analysis_ui.run_or_queue(request, [loaded, *sources], mode, label, sel.device)
    except RobustScopeError as exc:
        common.show_error(exc)
        return True, None


def show_report(report) -> None:
    """Tables, the sweep plot, the leaderboard beside ours, and downloads of one report."""
    threat = f"{norm_symbol(report.norm)} ε={report.eps:.4g}"
    what = "quick report" if report.quick else "full AutoAttack report"
    st.markdown(f"**{report.model}** on {report.n} `{report.dataset}` test images, {threat} · {what} · "
                f"{report.seconds:.1f} s{' · stopped early' if report.stopped else ''}")
    if report.quick:
        st.info(report.caveat + " **Full AutoAttack report** measures it.")
    else:
        st.caption(report.caveat)
    tables = report.tables()
    left, right = st.columns(2)
    with left:
        st.dataframe(pd.DataFrame(tables["summary"]), hide_index=True, key="report_summary")
        if tables["autoattack"]:
            st.caption(("Quick: APGD-CE + APGD-T" if report.quick else "AutoAttack")
                       + ", attack by attack: each runs on the points still robust.")
            st.dataframe(pd.DataFrame(tables["autoattack"]), hide_index=True, key="report_aa")
        for note in (report.autoattack or {}).get("notes", []):
            st.warning(note)
    with right:
        if report.sweep or report.autoattack:
            st.plotly_chart(report.figure(), key="report_sweep_chart")
    if tables["checks"]:
        st.markdown("**Gradient-masking checks**")
        frame = pd.DataFrame(tables["checks"])
        frame["status"] = frame["status"].map(STATUS_ICON)
        st.dataframe(frame, hide_index=True, key="report_checks")
        flagged = (report.masking or {}).get("flagged") or []
        if flagged:
            st.error(f"Flagged: {', '.join(flagged)} — the robust figure may rest on masked gradients; attack "
                     "adaptively before trusting it.")
        else:
            st.success("No check flagged: the gradient-based figures behave like an honest evaluation's.")
    board = report.leaderboard or {}
    if board:
        st.caption(f"Leaderboard figures come from {board.get('from', 'the source')} (not measured here; "
                   f"RobustBench evaluates the full test set).")
    stem = f"robustness_report_{report.model}"
    dl = st.columns(5)
    dl[0].download_button("Report (JSON)", report.to_json(), f"{stem}.json", "application/json", key="report_dl_json")
    for i, name in enumerate(("summary", "autoattack", "checks", "sweep"), start=1):
        if tables[name]:
            dl[i].download_button(f"{name.capitalize()} (CSV)", report.csv(name), f"{stem}_{name}.csv", "text/csv",
                                  key=f"report_dl_{name}")
    if png_export_available() and (report.sweep or report.autoattack):
        st.download_button("ε-sweep (PNG)", lambda: report.figure().to_image(format="png"), f"{stem}_sweep.png",
                           "image/png", key="report_dl_png")
