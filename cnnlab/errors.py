"""Typed, user-facing errors: each carries a one-line message; commands turn them into exit code 2."""


class CnnlabError(Exception):
    """A problem the user can fix; its message is one line that says what was wrong and how to fix it."""

    exit_code = 2  # bad input; subclasses for other endings (divergence 3, interrupted 130/143)


class ConfigError(CnnlabError):
    """A configuration value is invalid."""


class DataError(CnnlabError):
    """A dataset is missing, unreadable or inconsistent."""


class CheckpointError(CnnlabError):
    """A checkpoint cannot be read or is not a cnnlab checkpoint."""


def did_you_mean(name: str, choices: list[str]) -> str:
    """Return ' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def unknown(kind: str, name: str, choices: list[str] | tuple[str, ...]) -> str:
    """The one line for a name that is not a valid choice: 'unknown <kind> <name> (did you mean …?);
    choose one of: …'."""
    known = list(choices)
    return f"unknown {kind} {name!r}{did_you_mean(name, known)}; choose one of: {', '.join(known)}"


def file_error(error: OSError) -> str:
    """One line for a failed file operation: the path and the system's reason."""
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or error}; check that the path exists, is writable and its disk has space"


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first non-empty line of the error (of its cause when it has none, else its type's name),
    cut to `limit` characters: the reason a one-line message quotes."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines and error.__cause__ is not None:
        return first_line(error.__cause__, limit)
    return (lines[0] if lines else type(error).__name__)[:limit]
