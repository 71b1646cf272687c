"""The one exception type for user mistakes: entry points print it as a single line and exit 2."""


class LitlabError(ValueError):
    """Something the user can fix (bad override, missing data, wrong checkpoint, malformed file);
    a bad value, so code that expects ValueError from a net's arguments still catches it."""


def first_line(err: BaseException) -> str:
    """An exception's first line of text, or its type's name when it has none."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
