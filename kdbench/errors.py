"""The one exception type the CLI turns into a single line for the user.

Raise :class:`KdbenchError` for anything the user can fix (an unknown name, a bad value, a missing
file): its message must name the thing and say how to fix it. Anything else escaping to the CLI is a
bug and keeps its traceback.
"""


class KdbenchError(Exception):
    """A problem with the user's input, reported as one line without a traceback.

    ``details`` (optional, several lines, e.g. a data-check report) is printed before that line.
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class ConfigError(KdbenchError):
    """An invalid configuration key or value."""


class UnknownName(KdbenchError):
    """A plugin name that no installed plugin provides."""


class Unavailable(KdbenchError):
    """Raised by a plugin's hook, after it has registered what it provides, to say that those things cannot be
    built on this machine (an optional dependency is not installed). ``kdbench plugins`` shows the message as the
    plugin's status; the plugin's names stay listed, and building one is the plugin's own one-line refusal."""


class DuplicateName(KdbenchError):
    """Two plugins registering the same name of the same kind."""


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line (or its type's name when it has none): what a one-line
    refusal quotes of a library's error."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
