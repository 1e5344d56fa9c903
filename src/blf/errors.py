"""Errors a user can act on.

Every message names the offending value and what is allowed instead; the apps print the
message alone (no traceback) and exit with status 2.
"""


class BLFError(Exception):
    """Base class of the errors caused by input rather than by a bug."""


class ConfigError(BLFError):
    """A configuration value is unknown or out of range."""


class DataError(BLFError):
    """A dataset cannot be found, fetched or verified."""


class CheckpointError(BLFError):
    """A checkpoint is missing, unreadable or belongs to a different run."""


class BusyError(BLFError):
    """Another process is using the run folder."""


class NonFiniteLossError(BLFError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""


class RecordError(BLFError):
    """A record file cannot be read as this code's records (a newer schema, a broken row)."""


class UntrustedFileError(BLFError):
    """A file from a run folder, checkpoint or export asks for something only the user may ask
    for: code outside the project, a config key the project does not have, a write through a link."""
