"""The static leaderboard and the study report, rendered from the store's query functions."""
