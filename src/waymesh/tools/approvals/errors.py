"""The one error type the approvals tool raises for bad input; the CLI turns it into exit code 1."""


class ApprovalsError(Exception):
    """Bad input or environment, with a message meant for the person at the terminal."""
