"""The one exception type for user mistakes: entry points print it as a single line and exit 2."""


class LitlabError(Exception):
    """Something the user can fix (bad override, missing data, wrong checkpoint, malformed file)."""
