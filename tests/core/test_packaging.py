"""The README's two set-up commands and CI stay in step."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", setup, flags=re.S)


def test_readme_has_exactly_two_setup_commands():
    commands = readme_commands()
    assert len(commands) == 2, commands
    quickstart, tests = commands
    assert "vlfw_run config=projects/quickstart.yaml" in quickstart
    assert "pytest" in tests
    assert (ROOT / "projects" / "quickstart.yaml").is_file()


def test_ci_runs_the_readme_test_command_and_the_linter():
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci
    assert "ruff check ." in ci and "ruff" in (ROOT / "requirements.txt").read_text()


def test_requirements_admit_the_local_torch():
    requirements = (ROOT / "requirements.txt").read_text()
    setup = (ROOT / "setup.py").read_text()
    for text in (requirements, setup):
        assert "torch>=2.2,<2.15" in text and "torchvision>=0.17,<0.30" in text
    for plugin in sorted((ROOT / "plugins").glob("*/pyproject.toml")):
        assert f"-e ./plugins/{plugin.parent.name}" in requirements, plugin
