"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
    """A bad input, option or file that the user can fix.

    The message is one line that names the file or option and says what to do. The CLI turns it into a
    clean error message without a traceback.
    """
