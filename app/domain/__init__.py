"""Sendboard's rules as plain Python: lifecycle, responses, eligibility, schedules, thresholds.

Nothing here imports Flask, SQLAlchemy or Redis; the services apply these rules to the database.
"""
