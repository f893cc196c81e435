"""The README is the front door: its quick start is the two commands CI runs, and its links lead somewhere.

The documentation site's own links are checked by its build (``sphinx -W`` in .ci/run); the README is
not part of the site, so its links into ``docs/`` are checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
#: Markdown links and images whose target is a path in the repository (not a URL, not an anchor).
RELATIVE_LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)\s]+)\)")


def quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_the_quick_start_is_the_example_project_and_the_test_command():
    # .ci/run runs `tests/run.py`, and tests/test_first_run.py replays `example_project/run.py`.
    assert quick_start_commands() == ["python3 example_project/run.py", "python3 tests/run.py"]
    for command in quick_start_commands():
        assert (ROOT / command.split()[1]).is_file()


def test_every_relative_link_in_the_readme_leads_to_a_file_of_the_repository():
    targets = RELATIVE_LINK.findall(README)
    assert targets, "the README links into docs/"
    missing = [t for t in targets if not (ROOT / t.split("#", 1)[0]).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_the_readme_links_to_the_tutorial_and_the_changelog():
    targets = set(RELATIVE_LINK.findall(README))
    assert {"docs/tutorial.md", "CHANGELOG.md"} <= targets
