"""Pilot: AI-guided troubleshooting sessions (guided steps, flow mode, branches, escalation)."""
