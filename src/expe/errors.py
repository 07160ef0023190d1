"""One error family: every failure a user can cause ends as one line naming the problem."""


class ExpeError(Exception):
    """Base class; the CLI prints `expe: error: <message>` and exits with status 2."""


class ConfigError(ExpeError):
    """A configuration key has a bad value (the message names the key and what is allowed)."""


class DataError(ExpeError):
    """Input data is missing, empty, corrupt or unusable."""


class CheckpointError(ExpeError):
    """A checkpoint or weights file is corrupt or does not match the configuration."""


class TrainingDiverged(ExpeError):
    """The loss became NaN or infinite."""
