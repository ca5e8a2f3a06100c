"""Mailings area: list, mailing page, editor, audience, actions, contact history."""
