"""Contacts area: the contact table, contact page, lists and CSV imports."""
