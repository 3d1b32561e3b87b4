"""The one rule every string irjax reads must pass: it can be written out as UTF-8 and handed to C.

JSON can spell strings that are not text: `"\\ud800"` decodes to a lone UTF-16 surrogate, which has
no UTF-8 encoding, and `"\\u0000"` to a NUL, which C libraries read as the end of the string. Both
decode without complaint and travel far: a surrogate in a document id crashed pytrec_eval with a
segmentation fault (the whole process, no message), and one in a document's text made the
MiniLM tokenizer raise a TypeError naming no file. Readers therefore check every id and text
with `text_problem` where the value enters (collection.py, runs.py), and name the file and line.
"""
from __future__ import annotations


def text_problem(value: str) -> str | None:
    """Why `value` cannot be used as text (lone surrogate, NUL), or None when it can."""
    if "\x00" in value:
        return (f"contains a NUL character (\\u0000) at character {value.index(chr(0))}; "
                "remove it (C libraries would cut the string there)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return (f"contains a lone UTF-16 surrogate (\\u{ord(value[e.start]):04x}) at character "
                f"{e.start}, which is not valid Unicode text and cannot be encoded as UTF-8; "
                "fix the \\u escape (a surrogate must be followed by its pair) or remove it")
    return None


def check_text(value: str, where: str) -> str:
    """`value` unchanged, or ValueError("<where>: <problem>")."""
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(f"{where}: {problem}")
    return value
