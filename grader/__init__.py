"""Autograding for the platform's nbgrader courses: fast, parallel, sandboxed (docs/grading.md).

- `app` — `smartlab grade`: nbgrader's autograde for a whole class (plan, workers, summary);
  `autograde` runs nbgrader's converter for one submission, `use_sandbox(c)` for configs;
- `execute` — nbgrader's Execute on sandboxed warm kernels, limits that stop politely;
- `kernels` — those kernels as jupyter_client sees them; `settings` — `c.Sandbox.*`;
- `zygote` — the fork server; `kernel_child` — its children; `sandbox` — the confinement;
- `feedback` — hidden tests out of feedback; `export` — CSVs per course/institution, LMS totals;
- `pool`, `journal`, `progress`, `sqlite`, `speedups` — the batch's machinery;
- `synthetic`, `compare` — synthetic classes and score comparison (tests, benchmark).
"""
