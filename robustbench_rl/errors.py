"""The errors rbrl raises for bad input: each message names the problem and the fix.

They live in this torch-free module so that the command line can catch them without importing the
modules that raise them.
"""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with a message naming the problem and the fix."""


class EnvError(ValueError):
    """An env id that cannot be built, or an env whose action space the threat model cannot cover."""
