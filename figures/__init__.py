"""Paper figures, tables and reports, drawn from analysis outputs only; style.py is the one plotting style."""
