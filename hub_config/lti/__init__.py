"""LTI 1.3 for partner institutions: launches from their LMS, course and role mapping, passback."""
