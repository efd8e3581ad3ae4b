"""Tests of the LLM provider layer (deskpilot.llm)."""
