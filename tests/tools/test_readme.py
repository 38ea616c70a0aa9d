"""The README's commands run as written: every shell command of its Training section."""

import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def shell_commands(markdown: str):
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.S):
        for line in block.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                yield line


def test_every_training_command_runs(demo_env, tmp_path):
    commands = list(shell_commands(section("Training")))
    assert len(commands) >= 3 and all(c.startswith("python tools/") for c in commands)
    for command in commands:
        argv = [
            sys.executable if word == "python" else word.replace("output/readme", str(tmp_path))
            for word in shlex.split(command)
        ]
        done = subprocess.run(argv, cwd=REPO, env=demo_env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    assert (tmp_path / "model_final.pth").is_file()
    assert "Evaluation results for detpre_demo_val_10_s0 in csv format" in (tmp_path / "log.txt").read_text()


def test_tools_readme_indexes_every_tool_and_each_follows_the_contract():
    index = (REPO / "tools" / "README.md").read_text()
    for tool in sorted((REPO / "tools").glob("*.py")):
        assert f"`{tool.name}`" in index, f"tools/README.md does not list {tool.name}"
        source = tool.read_text()
        # The contract's main: wrapped by cli_main, or the package's own main (train_net, kaist_eval).
        assert "@cli_main" in source or re.search(r"^from \S+ import main$", source, flags=re.M), tool.name
        assert 'if __name__ == "__main__":\n    sys.exit(main())' in source, tool.name


# Files of this repository that the user-facing documents name. docs/aligndet.md and the other
# fidelity tables also cite the official repositories' files, so only paths into detpre's own
# packages and tests are checked there.
_OWN_PATH = re.compile(
    r"(?<![\w/.])((?:configs|tests|tools|benchmarks|docs|detpre|kaisteval|datasets)/[\w/.+-]+"
    r"\.(?:py|yaml|md|png|sh))"
)
_GUIDES = ("README.md", "BENCHMARKS.md", "DEVELOPERS.md", "tools/README.md", "datasets/README.md", "docs/recipes.md")


def test_every_file_the_documents_name_exists():
    missing = []
    for document in [REPO / g for g in _GUIDES] + sorted((REPO / "docs").glob("*.md")):
        fidelity_table = document.parent.name == "docs" and document.name != "recipes.md"
        for path in _OWN_PATH.findall(document.read_text()):
            if fidelity_table and not path.startswith(("detpre/", "tests/", "kaisteval/")):
                continue
            if not (REPO / path).exists():
                missing.append(f"{document.relative_to(REPO)}: {path}")
    assert not missing, "documents name files that do not exist:\n" + "\n".join(missing)
