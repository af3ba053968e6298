"""Grading a whole class: parallel (Dask), sandboxed (bubblewrap), resumable, into SQLite or PostgreSQL.

    python -m grading autograde 01_sampling          # or `make autograde LAB=01_sampling`

`class_grader` coordinates, `submission` grades one (lab, student) in its own process,
`executor` runs the notebook and watches for tampering, `sandbox` builds the kernel's jail.
"""
