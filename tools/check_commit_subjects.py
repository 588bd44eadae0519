"""Fail when a commit made since the renovation began has a subject over 72 characters.

Older history is left as it is. In a shallow clone that lacks the renovation's first commit,
only the newest commit is checked.
"""

from __future__ import annotations

import subprocess
import sys

#: The renovation's first commit ("Move offline tools, adapters and utilities to their own rooms").
FIRST = "7d5b9f08e09f794b06709a3220051c18091e6abe"
LIMIT = 72


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def main() -> int:
    known = subprocess.run(["git", "cat-file", "-e", f"{FIRST}^{{commit}}"], capture_output=True).returncode == 0
    revisions = [f"{FIRST}^..HEAD"] if known else ["-1", "HEAD"]
    long = [
        line
        for line in git("log", "--format=%h %s", *revisions).splitlines()
        if len(line.split(" ", 1)[1]) > LIMIT
    ]
    for line in long:
        print(f"commit subject over {LIMIT} characters: {line}", file=sys.stderr)
    return 1 if long else 0


if __name__ == "__main__":
    sys.exit(main())
