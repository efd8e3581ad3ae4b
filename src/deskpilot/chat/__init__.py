"""Chat copilot: marker protocol, typed chat events and the prompt section that teaches them."""
