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


def describe_validation_problem(problem: dict) -> str:
    """One pydantic error (an item of `ValidationError.errors()`) as a message naming the key
    ('node.scale_up.latency') and, for a scalar value, what was given."""
    key = ".".join(str(part) for part in problem["loc"])
    key = key if key.isprintable() else repr(key)[1:-1]  # a key holding a line break stays on one line
    if problem["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    if problem["type"] == "missing":
        return f"missing required key '{key}'"
    message = problem["msg"].removeprefix("Value error, ")
    given = problem.get("input")
    said = "got " in message or (isinstance(given, bool) and str(given).lower() in message)  # "..., not true"
    if isinstance(given, (bool, int, float, str)) and len(repr(given)) <= 80 and not said:
        message += f" (got {given!r})"
    return f"key '{key}': {message}" if key else message


def validation_input_error(error, where: str) -> PlannerInputError:
    """A pydantic ValidationError as the one-line input error of `where` (a file, a flag set): its first
    problem, as describe_validation_problem words it."""
    return PlannerInputError(f"{where}: {describe_validation_problem(error.errors()[0])}")
