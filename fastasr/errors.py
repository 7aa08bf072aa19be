"""The one kind of user error: "you asked for something wrong".

Raised where the mistake is found, with a message that names the option or file and what would be accepted;
`fastasr.cli.main` turns it into one stderr line (`fastasr COMMAND: error: MESSAGE`) and exit status 2, and shows
the traceback only with `--debug`. Everything else is a bug and keeps its traceback.

It is not a ValueError on purpose: a handler for bad data (`except ValueError`) must not swallow it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in what the user asked for (an option, a file, a setting); the message says what is accepted."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest of `choices`, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
