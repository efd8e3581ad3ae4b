"""Knowledge: runbook flows, script templates, the starter library and flow matching."""
