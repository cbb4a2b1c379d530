"""Schedules without I/O: cron expressions in timezones, fire times across DST, previews, and
what a scheduler does with the fire times it finds due (:mod:`opsgate.schedules.fires`)."""
