"""What the courses' notebooks and graded cells import, and nothing else.

`checks` (safe calls into student code, readable failures), `live` (the live kits, optional and
never used while grading), `recorded` (the recorded datasets, generated from the twins),
`controllers` (a controller run on a twin as a job runs it on a kit; the assignments' trace
scorers), `variants` (each student's seed and twin parameters). This
package is on every student's and every sandboxed kernel's path, so it holds no solution and no
hidden test: the course sources (courses/) are course staff's only, and kernels never see them.
"""
