"""Helpers for the courses' test cells: call a student's function safely and check its answer.

A test cell must cost a student only that question's points, and the feedback must say what
went wrong in one readable line (in Russian, the centre's language). So every call into
student code goes through `call`, which turns an exception, an endless loop or a wrong type
into an AssertionError with a plain message, and the checks below compare answers with a
tolerance and name the quantity that was off.

The time limit uses SIGALRM: notebook kernels run cells on their main thread, where Python
delivers signals, so a looping student function is interrupted after `seconds` instead of
running into nbgrader's cell timeout.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

DEFAULT_SECONDS = 10.0


class StudentTimeout(BaseException):
    """Raised inside student code when its time is up (a BaseException, so that a student's
    `except Exception:` inside a loop cannot swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Interrupt the block after `seconds` (main thread only; elsewhere no limit applies)."""
    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return

    def expire(_signum: int, _frame: Any) -> None:
        raise StudentTimeout(what)

    started = time.monotonic()
    outer_left, _ = signal.getitimer(signal.ITIMER_REAL)  # an enclosing limit keeps running
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, min(seconds, outer_left) if outer_left else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left:
            left = outer_left - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))


def describe_call(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def call(
    fn: Callable[..., Any], *args: Any, seconds: float = DEFAULT_SECONDS, **kwargs: Any
) -> Any:
    """`fn(*args, **kwargs)` with a time limit; any failure becomes one readable AssertionError."""
    name = describe_call(fn)
    if not callable(fn):
        raise AssertionError(f"{name} должна быть функцией, а это {type(fn).__name__}")
    try:
        with time_limit(seconds, name):
            return fn(*args, **kwargs)
    except StudentTimeout:
        raise AssertionError(
            f"{name} не завершилась за {seconds:g} с: возможно, бесконечный цикл"
        ) from None
    except NotImplementedError:
        raise AssertionError(f"{name} ещё не написана (NotImplementedError)") from None
    except Exception as err:  # the student's bug, reported as this question's failure
        raise AssertionError(f"{name} завершилась с ошибкой {type(err).__name__}: {err}") from None


def number(value: Any, what: str) -> float:
    """`value` as a float; AssertionError if it is not a real number (bool does not count)."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise AssertionError(f"{what}: ожидалось число, получено {type(value).__name__}")
    result = float(value)
    if math.isnan(result):
        raise AssertionError(f"{what}: получено NaN вместо числа")
    return result


def integer(value: Any, what: str) -> int:
    """`value` as an int; AssertionError unless it is a whole number (int or numpy integer)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise AssertionError(
            f"{what}: ожидалось целое число (int), получено {type(value).__name__}"
        )
    return int(value)


def array(value: Any, what: str, length: int | None = None) -> np.ndarray:
    """`value` as a 1-D float array (lists are accepted); checks the length if given."""
    if not isinstance(value, np.ndarray | list | tuple):
        raise AssertionError(f"{what}: ожидался массив numpy, получено {type(value).__name__}")
    try:
        result = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise AssertionError(f"{what}: элементы массива должны быть числами") from None
    if result.ndim != 1:
        raise AssertionError(f"{what}: ожидался одномерный массив, получена форма {result.shape}")
    if length is not None and len(result) != length:
        raise AssertionError(f"{what}: ожидалось {length} элементов, получено {len(result)}")
    return result


def close(
    actual: Any, expected: float, what: str, rel: float = 1e-6, abs_tol: float = 1e-9
) -> None:
    """Assert that a number is within `rel`/`abs_tol` of the expected value."""
    value = number(actual, what)
    if not math.isclose(value, expected, rel_tol=rel, abs_tol=abs_tol):
        raise AssertionError(f"{what}: получено {value:.6g}, ожидалось {expected:.6g}")


def all_close(
    actual: Any, expected: Any, what: str, rel: float = 1e-6, abs_tol: float = 1e-9
) -> None:
    """Assert that an array matches the expected one element by element (NaN equals NaN)."""
    want = np.asarray(expected, dtype=float)
    got = array(actual, what, len(want))
    bad = ~np.isclose(got, want, rtol=rel, atol=abs_tol, equal_nan=True)
    if bad.any():
        i = int(np.argmax(bad))
        raise AssertionError(
            f"{what}: {int(bad.sum())} из {len(want)} элементов не совпадают, "
            f"первый — [{i}]: получено {got[i]:.6g}, ожидалось {want[i]:.6g}"
        )


def keys(value: Any, expected: set[str] | list[str], what: str) -> dict[str, Any]:
    """Assert that `value` is a dict with exactly the expected keys."""
    if not isinstance(value, dict):
        raise AssertionError(f"{what}: ожидался словарь (dict), получено {type(value).__name__}")
    want = set(expected)
    if set(value) != want:
        missing = ", ".join(sorted(want - set(value))) or "—"
        extra = ", ".join(sorted(map(str, set(value) - want))) or "—"
        raise AssertionError(f"{what}: ключи не те; нет {missing}; лишние {extra}")
    return value
