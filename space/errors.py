"""The one base class of bad input, at the bottom of the import graph so every layer can raise it.

`budgetnas` prints a `BadInput` as one line and exits 2; anything else that escapes a command
is a bug in budgetnas and is reported as one, with its traceback. A `BadInput` is not a
`ValueError`: a catch of ValueError (a parse, a library's refusal) never swallows one, and a
catch of BadInput never hides a ValueError that is a bug.
"""


class BadInput(Exception):
    """A value, file, path or setting given to budgetnas that it cannot use; the message is one line
    that names the bad value and, where there is one, the fix."""


class ShapeError(BadInput):
    """An architecture that the image cannot hold: its feature map vanishes, or its groups do not
    divide its channels. A sampled one is infeasible (pruned as "shape"), not a bug."""
