"""The centre's nbgrader courses, in their source layout, and their installer.

Each `courses/<course_id>/` is an nbgrader course (`nbgrader_config.py`, `source/<assignment>/`)
with solutions and hidden tests; see courses/README.md. Only course staff read them: graded
kernels never import this package (what notebooks import is `coursework`), `smartlab up` as
root closes these folders to other accounts, `datasets` writes the recorded data released
with the assignments (its parameters are answers), and `install` copies a course into its grader's
course folder and releases its first assignment.
"""
