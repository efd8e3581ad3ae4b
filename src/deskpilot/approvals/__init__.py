"""Human approval of actions an AI wants to take: requests bound to one tool call, decisions, standing grants."""
