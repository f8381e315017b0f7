"""What the courses' notebooks and graded cells import, and nothing else.

`checks` (safe calls into student code, readable failures), `live` (the live kits, optional and
never used while grading), `recorded` (the recorded datasets, generated from the twins). This
package is on every student's and every sandboxed kernel's path, so it holds no solution and no
hidden test: the course sources (courses/) are course staff's only, and kernels never see them.
"""
