"""Every exception class of the toolkit, in one place; `UserError` and its kinds are mistakes a user can fix.

The modules that raise them import them from here (and so still offer them: `degrader.images.BadImageError`,
`degrader.shards.ShardError`).
"""


class UserError(Exception):
    """A bad input, option or file that the user can fix.

    The message is one line that names the file or option and says what to do. The CLI turns it into a
    clean error message without a traceback.
    """


class BadImageError(UserError):
    """A file that cannot be decoded into an RGB image."""


class ShardError(UserError):
    """A shard that cannot be read: truncated, corrupt, or holding a broken sample. Names the shard and key."""


class NotRegularFileError(OSError):
    """A named pipe, socket or device where an image file was expected: reading it could block forever."""
