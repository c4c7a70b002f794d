"""Receive: the DIMSE Storage SCP and the STOW-RS handler, both into one ingest (rules, checks, spool)."""
