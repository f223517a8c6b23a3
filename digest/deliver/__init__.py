"""Delivery: one SMTP session (smtp), the daily digest over the ledger (digest), notices."""
