"""Checking a student's answer to an exercise: right, or not yet with a hint (every chapter).

An exercise's check cell is visible and reads the student's variable; it compares it with a
value computed independently of it (or tests a property the answer must have), and says so:

    answer_1 = None  # your answer
    exercise.check("exercise 1", answer_1, expected=layer(torch.zeros(1, 1, 7, 7)).shape[-1])

The solution sits in its own folded cell (first line `# @title Solution 1`), under another name
(`solution_1`), so running it never overwrites the student's answer (CONTRIBUTING.md).
"""
import math
import numbers

import numpy as np
import torch

from ._text import wrap

__all__ = ["check"]


def check(label, answer, expected=None, *, test=None, hint=None, rel_tol=1e-6, abs_tol=1e-9):
    """Print whether `answer` is right ("right", "not right yet ..." or "not answered yet").

    expected: the right value (numbers compared to rel_tol/abs_tol, tensors and arrays
      elementwise with the same shape, anything else with ==), or
    test: a function of the answer that returns True when it is right (for answers with many
      right forms, such as a function the student writes).
    """
    if (expected is None) == (test is None):
        raise ValueError("check needs exactly one of expected= and test=")
    if answer is None or answer is Ellipsis:
        print(wrap(f"{label}: not answered yet (replace None by your answer and run the cell)"))
        return
    try:
        right = bool(test(answer)) if test is not None else _equal(answer, expected, rel_tol, abs_tol)
    except Exception as error:  # a wrong answer may fail inside the test: that is "not yet"
        right, hint = False, f"checking it raised {type(error).__name__}: {error}. {hint or ''}".strip()
    if right:
        print(f"{label}: right")
    else:
        shown = "" if callable(answer) else f" (got {_short(answer)})"
        print(wrap(f"{label}: not right yet{shown}" + (f". Hint: {hint}" if hint else "")))


def _equal(answer, expected, rel_tol, abs_tol):
    if isinstance(expected, (torch.Tensor, np.ndarray)) or isinstance(answer, (torch.Tensor, np.ndarray)):
        a, e = torch.as_tensor(np.asarray(answer)), torch.as_tensor(np.asarray(expected))
        return a.shape == e.shape and torch.allclose(a.double(), e.double(), rtol=rel_tol, atol=abs_tol)
    if isinstance(expected, (bool, np.bool_)) or isinstance(answer, (bool, np.bool_)):
        return isinstance(answer, (bool, np.bool_)) and bool(answer) == bool(expected)
    if isinstance(expected, numbers.Real) and isinstance(answer, numbers.Real):
        return math.isclose(answer, expected, rel_tol=rel_tol, abs_tol=abs_tol)
    if isinstance(expected, (tuple, list)) and isinstance(answer, (tuple, list)):
        return len(answer) == len(expected) and all(
            _equal(a, e, rel_tol, abs_tol) for a, e in zip(answer, expected))
    return answer == expected


def _short(value, width=40):
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."
