"""Errors a user can cause. The CLI turns each into one line and an exit code."""


class BridgeError(Exception):
    """Base of every error the user can cause or fix (exit code 1 unless said otherwise)."""

    exit_code = 1


class ValidationError(BridgeError, ValueError):
    """Input that can never be written: bad names, bad payloads, oversize items."""

    exit_code = 2


class ConcurrencyError(BridgeError):
    """An optimistic-lock conflict: the version we wanted to write exists already."""

    exit_code = 3

    def __init__(self, pk: str, attempted: int, existing: int) -> None:
        self.pk = pk
        self.attempted = attempted
        self.existing = existing
        if existing >= attempted:
            message = (
                f"conflict on {pk}: version {attempted} already exists "
                f"(latest version is {existing})"
            )
        else:
            message = (
                f"conflict on {pk}: expected version {attempted - 1}, but the "
                f"latest version is {existing}"
            )
        super().__init__(message)
