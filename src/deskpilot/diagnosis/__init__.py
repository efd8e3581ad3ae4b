"""What a session knows and proposes: facts ("What we know"), the task lane and suggested fixes."""
