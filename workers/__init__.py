"""Scheduling of the background jobs in domain.jobs."""
