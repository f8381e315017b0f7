"""The security tests reuse the grader tests' course fixtures (a generated nbgrader course)."""

from tests.grader.conftest import generated_course, work_root  # noqa: F401
