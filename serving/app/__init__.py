"""Use cases: typed jobs (daily batch, backfill, report), the day's answers, the online path,
learner status and overrides, KPIs. Imports core and io, never http or cli."""
