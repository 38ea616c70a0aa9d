"""The error every config check raises: one line that names the file, key or value."""


class ConfigError(ValueError):
    """A config that cannot describe a run; the message names the file, key or value."""
