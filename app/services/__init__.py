"""Use cases: every database change the views and jobs make goes through a function here."""
