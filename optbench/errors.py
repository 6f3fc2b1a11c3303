"""User-facing errors: one line that names the culprit and suggests the fix."""

from __future__ import annotations

import difflib


class OptbenchError(Exception):
    """An error the CLI prints as one line (no traceback) before exiting non-zero."""


def did_you_mean(name: str, known) -> str:
    """' (did you mean 'adam'?)' or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown(kind: str, name: str, known) -> OptbenchError:
    known = sorted(known)
    return OptbenchError(
        f"unknown {kind} {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}"
        f" (run `optbench list` to see every plugin)"
    )
