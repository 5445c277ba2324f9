"""The one exception type that means "the user asked for something that cannot work"."""


class UserError(Exception):
  """Bad flags, inconsistent options, or missing/corrupt input data.

  Entry points print the message as one line and exit non-zero, without a traceback.
  The message must say what was wrong and, where possible, what to do instead.
  """
