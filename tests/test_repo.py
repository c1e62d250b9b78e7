"""The repository keeps its promises: README's two commands, CI runs the same test command."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_commands():
    text = (REPO / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_starts_with_exactly_two_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    assert "streamlit run app.py" in commands[0] and "requirements.txt" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in [line.strip() for line in ci]


def test_requirements_are_pinned_and_torch_pair_resolves_to_pypi():
    reqs = [l.strip() for l in (REPO / "requirements.txt").read_text().splitlines()
            if l.strip() and not l.startswith("#")]
    assert all("==" in r for r in reqs), reqs
    assert "torch==2.15.0" in reqs and "torchvision==0.29.2" in reqs
    assert not any(r.startswith("torchattacks") for r in reqs)


def test_engine_never_imports_streamlit_and_pages_never_import_torch():
    for path in (REPO / "engine").rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+streamlit\b", path.read_text(), re.M), path
    for path in (REPO / "pages").glob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+(torch|torchvision|captum|lucent)\b", path.read_text(), re.M), path
