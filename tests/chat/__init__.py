"""Tests of the chat copilot."""
