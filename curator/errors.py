"""Small named exceptions. The CLI prints them as one line: `Error: what — why — how to fix`."""


class CuratorError(Exception):
    """Base of every error the CLI turns into a one-line message (exit code 1)."""

    def __init__(self, what: str, why: str = "", fix: str = ""):
        self.what, self.why, self.fix = what, why, fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = [self.what] + [p for p in (self.why, self.fix) if p]
        return " — ".join(parts)


class StoreError(CuratorError):
    """The store is missing, unreadable, or asked for something it does not hold."""


class ReadOnlyError(CuratorError):
    """A SQL statement tried to write or escape the store."""


class InputError(CuratorError):
    """A user-supplied file, flag or value is invalid."""


class MissingExtraError(CuratorError):
    """An optional dependency (extra) is not installed."""

    def __init__(self, package: str, extra: str, feature: str):
        super().__init__(
            f"{feature} needs the '{package}' package",
            f"it belongs to the '{extra}' extra, which is not installed",
            f"pip install 'vila2-curator[{extra}]'",
        )


def require(module: str, extra: str, feature: str):
    """Import an optional dependency or raise MissingExtraError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:  # only a missing package is turned into the extra hint
        raise MissingExtraError(module.split(".")[0], extra, feature) from e


ROUND_MAX = 2**31 - 1   # captions.round is an int32


def check_round(round, name: str = "round") -> int:
    """A round number the store can hold: 0 (the original captions) .. ROUND_MAX."""
    if isinstance(round, bool) or not isinstance(round, int) or not 0 <= round <= ROUND_MAX:
        raise InputError(f"{name} {round!r} is not a round number", f"rounds are whole numbers 0..{ROUND_MAX} "
                         "(0 = the original captions)", f"e.g. --{name} 1")
    return round
