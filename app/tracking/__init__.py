"""Open pixel, click redirect, unsubscribe and preference pages: the pages recipients reach."""
