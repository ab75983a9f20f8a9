"""The one error of the replay package."""


class ReplayError(Exception):
    """The replay could not run (pipeline did not start, bad recording, ...)."""
