"""nbgrader configuration of the course "Smart parking analytics".

The hub-wide settings (exchange, timeouts, feedback without hidden tests) come from
hub_config/jupyter/nbgrader_config.py; only what belongs to this course is here.
"""

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

c.CourseDirectory.course_id = "smart-parking"

# Student-facing text is in Russian, the centre's language.
c.ClearSolutions.code_stub = {"python": "# ВАШ КОД ЗДЕСЬ\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "ВАШ ОТВЕТ ЗДЕСЬ"
