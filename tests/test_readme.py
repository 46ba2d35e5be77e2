"""README's set-up commands: exactly two, and CI runs the test one."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```bash\n")[1:]
    return [b.split("```", 1)[0].strip() for b in blocks]


def test_two_setup_commands_and_ci_runs_the_test_one():
    cmds = _setup_commands()
    assert len(cmds) == 2
    main, tests = cmds
    assert "torch==2.13.0" in main and "videolens demo" in main
    assert "torch==2.13.0" in tests and "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text()
