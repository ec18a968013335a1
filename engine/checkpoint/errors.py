"""What reading a checkpoint raises and warns."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, unsafe or unreadable; names the file."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped, or one is restored under a different numpy/BLAS."""
