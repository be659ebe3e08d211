"""The checks that more than one cnnlib module makes on its arguments, written once.

Used by every chapter through the modules that check their arguments."""
import operator


def positive_int(name, value, minimum=1, *, also=""):
    """The value as a Python int, if it is an integer >= minimum (int, NumPy or torch integer; not bool).

    `also` names what else is accepted, for the message (e.g. " (or None for the whole split)").
    """
    if not _is_int(value) or operator.index(value) < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}{also}, got {value!r}")
    return operator.index(value)


def _is_int(value):
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True
