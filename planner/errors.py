"""The one exception type for bad user input.

Every input problem (a file, a key, a flag) becomes a `PlannerInputError` whose message is a
single line naming where the problem is and what form was expected. The CLI prints it and exits 2.
Infeasible plans are not errors; they are results that explain what binds.
"""


class PlannerInputError(ValueError):
    """Bad user input: one line, naming the file/key/flag and the expected form."""

    def __init__(self, message: str):
        # Collapse to one line so the CLI contract (one-line errors) holds for any message.
        super().__init__(" ".join(str(message).split()))
