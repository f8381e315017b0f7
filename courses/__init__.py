"""The centre's nbgrader courses and what their notebooks import.

Each `courses/<course_id>/` is an nbgrader course in its source layout (`nbgrader_config.py`,
`source/<assignment>/`); see courses/README.md. The modules here are shared by all of them:
`checks` (safe calls into student code, readable failures), `live` (the live kits, optional and
never used while grading), `recorded` (the recorded datasets, generated from the twins) and
`install` (copy a course into a course folder and release its first assignment).
"""
